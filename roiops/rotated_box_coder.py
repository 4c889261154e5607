"""Box coding of rotated boxes: the (dx, dy, dw, dh, da) regression targets of rotated R-CNN / RRPN,
with the semantics of Detectron2's ``Box2BoxTransformRotated``.

For a reference box P = (Px, Py, Pw, Ph, Pa) and a target G = (Gx, Gy, Gw, Gh, Ga) (centre, width,
height, angle in degrees; roiops/rotated.py states the convention):

    dx = wx (Gx - Px) / Pw      dy = wy (Gy - Py) / Ph
    dw = ww log(Gw / Pw)        dh = wh log(Gh / Ph)
    da = wa * radians(wrap(Ga - Pa))      wrap(a) = (a + 180) mod 360 - 180, in [-180, 180)

The angle delta is in radians while the boxes' angles are in degrees (the original RRPN's choice:
radians keep da of the order of the other codes). Offsets are along the image axes, scaled by the
reference's width and height (not rotated into the reference's frame), as Detectron2 does.

Decoding inverts it: dw / ww and dh / wh are clamped from above at ``scale_clamp`` (log(1000 / 16):
a box grows at most 62.5x) so exp cannot overflow, and the decoded angle is wrapped to
[-180, 180). Invariant: decode(encode(G, P), P) == G up to float rounding, with G's angle wrapped
to [-180, 180), for boxes of positive size whose dw, dh stay below the clamp.

Implemented with element-wise PyTorch ops (any device and float dtype, differentiable with respect
to codes and boxes); the formulas are the definition, so there is no separate reference.
"""

import math
from dataclasses import dataclass

import torch

from roiops._validation import check_float, check_tensor

__all__ = ["RotatedBoxCoder"]


def wrap_degrees(angle: torch.Tensor) -> torch.Tensor:
    """angle (degrees) wrapped to [-180, 180): (angle + 180) mod 360 - 180 (floored modulo)."""
    return torch.remainder(angle + 180.0, 360.0) - 180.0


@dataclass(frozen=True)
class RotatedBoxCoder:
    """Encodes rotated boxes as regression targets relative to reference boxes, and decodes them.

    Attributes:
        weights: (wx, wy, ww, wh, wa), multipliers of (dx, dy, dw, dh, da); Detectron2's rotated
            RPN uses (1, 1, 1, 1, 1), its rotated box head (10, 10, 5, 5, 1).
        scale_clamp: upper clamp of dw / ww and dh / wh before exp when decoding.
    """

    weights: tuple[float, float, float, float, float] = (1.0, 1.0, 1.0, 1.0, 1.0)
    scale_clamp: float = math.log(1000.0 / 16)

    def __post_init__(self):
        weights = tuple(self.weights)
        if len(weights) != 5 or not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w > 0
            for w in weights
        ):
            raise ValueError(
                f"weights must be 5 positive finite numbers (wx, wy, ww, wh, wa), got {self.weights!r}"
            )
        object.__setattr__(self, "weights", tuple(float(w) for w in weights))
        if not isinstance(self.scale_clamp, (int, float)) or math.isnan(self.scale_clamp):
            raise ValueError(f"scale_clamp must be a number, got {self.scale_clamp!r}")

    def encode_single(self, reference_boxes: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
        """Codes of targets relative to references (Detectron2's ``get_deltas(proposals, targets)``).

        Args:
            reference_boxes: Tensor[N, 5] targets G (x_ctr, y_ctr, width, height, angle in
                degrees), float dtype.
            proposals: Tensor[N, 5] references P, same dtype and device.

        Returns:
            Tensor[N, 5] (dx, dy, dw, dh, da), da in radians within wa * [-pi, pi).

        Raises:
            TypeError / ValueError naming the argument for a bad type, shape, dtype or device.
        """
        check_tensor("reference_boxes", reference_boxes, ndim=2, last_dim=5)
        check_tensor("proposals", proposals, ndim=2, last_dim=5)
        check_float("reference_boxes", reference_boxes)
        check_float("proposals", proposals)
        if reference_boxes.shape != proposals.shape:
            raise ValueError(
                f"reference_boxes and proposals must have the same shape, got "
                f"{tuple(reference_boxes.shape)} and {tuple(proposals.shape)}"
            )
        _check_same(reference_boxes, proposals, "reference_boxes", "proposals")
        wx, wy, ww, wh, wa = self.weights
        px, py, pw, ph, pa = proposals.unbind(1)
        gx, gy, gw, gh, ga = reference_boxes.unbind(1)
        dx = wx * (gx - px) / pw
        dy = wy * (gy - py) / ph
        dw = ww * torch.log(gw / pw)
        dh = wh * torch.log(gh / ph)
        da = wrap_degrees(ga - pa) * (wa * math.pi / 180.0)
        return torch.stack((dx, dy, dw, dh, da), dim=1)

    def encode(self, reference_boxes, proposals):
        """encode_single, or per image for lists of Tensor[N_i, 5] (returns a tuple)."""
        if isinstance(reference_boxes, torch.Tensor):
            return self.encode_single(reference_boxes, proposals)
        if not isinstance(reference_boxes, (list, tuple)) or not isinstance(proposals, (list, tuple)):
            raise TypeError("reference_boxes and proposals must both be Tensors or both lists of Tensors")
        if len(reference_boxes) != len(proposals):
            raise ValueError(
                f"reference_boxes and proposals must have the same length, got "
                f"{len(reference_boxes)} and {len(proposals)}"
            )
        sizes = [len(b) for b in reference_boxes]
        return self.encode_single(torch.cat(list(reference_boxes)), torch.cat(list(proposals))).split(
            sizes, 0
        )

    def decode_single(self, rel_codes: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Applies codes to reference boxes (Detectron2's ``apply_deltas``).

        Args:
            rel_codes: Tensor[N, 5 * C] (dx, dy, dw, dh, da per class), float dtype.
            boxes: Tensor[N, 5] references, converted to rel_codes' dtype.

        Returns:
            Tensor[N, 5 * C] decoded (x_ctr, y_ctr, width, height, angle) boxes, angles in
            [-180, 180) degrees.

        Raises:
            TypeError / ValueError naming the argument for a bad type, shape or device.
        """
        check_tensor("rel_codes", rel_codes, ndim=2)
        check_tensor("boxes", boxes, ndim=2, last_dim=5)
        check_float("rel_codes", rel_codes)
        if rel_codes.size(1) % 5 != 0 or rel_codes.size(0) != boxes.size(0):
            raise ValueError(
                f"rel_codes must be [N, 5 * C] for boxes [N, 5], got {tuple(rel_codes.shape)} "
                f"and {tuple(boxes.shape)}"
            )
        if rel_codes.device != boxes.device:
            raise ValueError(
                f"rel_codes and boxes must be on the same device, got {rel_codes.device} and {boxes.device}"
            )
        wx, wy, ww, wh, wa = self.weights
        n = rel_codes.size(0)
        codes = rel_codes.reshape(n, -1, 5)
        ref = boxes.to(rel_codes.dtype).unsqueeze(1)  # [N, 1, 5]
        px, py, pw, ph, pa = ref.unbind(2)
        dx, dy, dw, dh, da = codes.unbind(2)
        dw = torch.clamp(dw / ww, max=self.scale_clamp)
        dh = torch.clamp(dh / wh, max=self.scale_clamp)
        x = dx / wx * pw + px
        y = dy / wy * ph + py
        w = torch.exp(dw) * pw
        h = torch.exp(dh) * ph
        a = wrap_degrees(da / wa * (180.0 / math.pi) + pa)
        return torch.stack((x, y, w, h, a), dim=2).reshape(n, -1)

    def decode(self, rel_codes: torch.Tensor, boxes) -> torch.Tensor:
        """Tensor[N, 5 * C] codes (or N * 5 * C values), boxes Tensor[N, 5] or a list of
        per-image Tensor[N_i, 5] -> Tensor[N, C, 5]."""
        check_tensor("rel_codes", rel_codes)
        if isinstance(boxes, (list, tuple)):
            boxes = torch.cat(list(boxes)) if len(boxes) else rel_codes.new_zeros((0, 5))
        check_tensor("boxes", boxes, ndim=2, last_dim=5)
        n = boxes.size(0)
        if n == 0:
            per_class = rel_codes.size(-1) // 5 if rel_codes.dim() and rel_codes.size(-1) % 5 == 0 else 1
            return rel_codes.new_zeros((0, per_class, 5))
        if rel_codes.numel() % (5 * n) != 0:
            raise ValueError(
                f"rel_codes must hold 5 * C values per box for the {n} boxes, got shape "
                f"{tuple(rel_codes.shape)}"
            )
        return self.decode_single(rel_codes.reshape(n, -1), boxes).reshape(n, -1, 5)


def _check_same(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.dtype != b.dtype:
        raise TypeError(f"{name_a} and {name_b} must have the same dtype, got {a.dtype} and {b.dtype}")
    if a.device != b.device:
        raise ValueError(f"{name_a} and {name_b} must be on the same device, got {a.device} and {b.device}")
