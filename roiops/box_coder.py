"""Box coding: the (dx, dy, dw, dh) regression targets of R-CNN (Girshick et al. 2014, appendix C),
as Fast R-CNN, Faster R-CNN and Mask R-CNN use them.

For a reference box P (a proposal or an anchor) with width Pw = x2 - x1, height Ph = y2 - y1 and
centre (Px, Py) = (x1 + 0.5 Pw, y1 + 0.5 Ph), a box G is coded as

    dx = wx (Gx - Px) / Pw      dy = wy (Gy - Py) / Ph
    dw = ww log(Gw / Pw)        dh = wh log(Gh / Ph)

and decoding inverts it, with dw / wh and dh / wh first clamped from above at ``bbox_xform_clip``
(log(1000 / 16) by default: a box grows at most 62.5x) so exp cannot overflow. Widths carry no +1
(continuous coordinates), exactly as torchvision's detection models compute them; the arithmetic
is written in the same order so the results agree bit for bit.

Invariant: decode(encode(G, P), P) == G up to float rounding, for boxes of positive size whose
dw, dh stay below the clamp.

Both directions are native ops (roiops::box_encode, roiops::box_decode; CPU and CUDA), one pass
over the boxes instead of a chain of element-wise PyTorch ops. Every step rounds as that chain did,
so the results are bit-identical to it (roiops/_reference.py keeps it; tests/roiops/test_box_coder.py
compares), and to torchvision's BoxCoder, in every float dtype: float16 and bfloat16 are computed in
float32 and rounded to the dtype after each step, as PyTorch's element-wise ops do. Both ops are
differentiable (roiops/_autograd.py), decode with respect to the codes too (the element-wise chain
was not: its in-place exp).
"""

import math
from dataclasses import dataclass

import torch

from roiops._reference import box_encode_reference
from roiops._validation import check_float, check_tensor


@dataclass(frozen=True)
class BoxCoder:
    """Encodes boxes as regression targets relative to reference boxes, and decodes them back.

    Attributes:
        weights: (wx, wy, ww, wh), multipliers of (dx, dy, dw, dh). (10, 10, 5, 5) for the box
            head of Faster / Mask R-CNN, (1, 1, 1, 1) for the RPN.
        bbox_xform_clip: upper clamp of dw / ww and dh / wh before exp when decoding.
    """

    weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    bbox_xform_clip: float = math.log(1000.0 / 16)

    def __post_init__(self):
        weights = tuple(self.weights)
        if len(weights) != 4 or not all(isinstance(w, (int, float)) and math.isfinite(w) and w > 0
                                         for w in weights):
            raise ValueError(f"weights must be 4 positive finite numbers, got {self.weights!r}")
        object.__setattr__(self, "weights", tuple(float(w) for w in weights))
        if not isinstance(self.bbox_xform_clip, (int, float)) or math.isnan(self.bbox_xform_clip):
            raise ValueError(f"bbox_xform_clip must be a number, got {self.bbox_xform_clip!r}")

    # ---- encoding ----------------------------------------------------------------------------

    def encode(self, reference_boxes, proposals):
        """Codes reference_boxes (the targets, e.g. matched ground truth) relative to proposals.

        Args:
            reference_boxes: Tensor[N, 4] (x1, y1, x2, y2), or a list of per-image Tensor[N_i, 4].
            proposals: the same structure: the boxes the codes are relative to.

        Returns:
            Tensor[N, 4] (dx, dy, dw, dh) in reference_boxes' dtype (promoted with proposals'
            dtype when that differs, each side computed in its own dtype), or a tuple of per-image
            Tensor[N_i, 4] when given lists (as torchvision's BoxCoder.encode).

        Raises:
            TypeError / ValueError naming the argument for mismatched structure or shapes.
        """
        if isinstance(reference_boxes, torch.Tensor):
            return self.encode_single(reference_boxes, proposals)
        if not isinstance(reference_boxes, (list, tuple)) or not isinstance(proposals, (list, tuple)):
            raise TypeError("reference_boxes and proposals must both be Tensors or both lists of Tensors")
        if len(reference_boxes) != len(proposals):
            raise ValueError(f"reference_boxes and proposals must have the same length, got "
                             f"{len(reference_boxes)} and {len(proposals)}")
        boxes_per_image = [len(b) for b in reference_boxes]
        codes = self.encode_single(torch.cat(list(reference_boxes)), torch.cat(list(proposals)))
        return codes.split(boxes_per_image, 0)

    def encode_single(self, reference_boxes: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
        """Tensor[N, 4] targets, Tensor[N, 4] proposals -> Tensor[N, 4] codes (see encode)."""
        check_tensor("reference_boxes", reference_boxes, ndim=2, last_dim=4)
        check_tensor("proposals", proposals, ndim=2, last_dim=4)
        check_float("reference_boxes", reference_boxes)
        if reference_boxes.size(0) != proposals.size(0):
            raise ValueError(f"reference_boxes and proposals must have the same number of boxes, got "
                             f"{reference_boxes.size(0)} and {proposals.size(0)}")
        _check_same_device("reference_boxes", reference_boxes, "proposals", proposals)
        if proposals.dtype != reference_boxes.dtype:
            # The kernel takes one dtype. Two dtypes keep the element-wise formula, which computes
            # each side in its own dtype and codes in the promoted one (as torchvision does).
            return box_encode_reference(reference_boxes, proposals, self.weights)
        return torch.ops.roiops.box_encode(reference_boxes, proposals, list(self.weights))

    # ---- decoding ----------------------------------------------------------------------------

    def decode(self, rel_codes: torch.Tensor, boxes) -> torch.Tensor:
        """Applies codes to reference boxes, for one or several classes per box.

        Args:
            rel_codes: Tensor[N, 4 * C] (dx, dy, dw, dh per class, class-major within a row),
                or any shape with N * 4 * C elements.
            boxes: Tensor[N, 4] reference boxes, or a list of per-image Tensor[N_i, 4] (then N is
                their total), converted to rel_codes' dtype.

        Returns:
            Tensor[N, C, 4] decoded (x1, y1, x2, y2) boxes in rel_codes' dtype.

        Raises:
            TypeError / ValueError naming the argument for a bad type or a size mismatch.
        """
        check_tensor("rel_codes", rel_codes)
        if isinstance(boxes, (list, tuple)):
            boxes = torch.cat(list(boxes)) if len(boxes) else rel_codes.new_zeros((0, 4))
        check_tensor("boxes", boxes, ndim=2, last_dim=4)
        n = boxes.size(0)
        if n == 0:
            per_class = rel_codes.size(-1) // 4 if rel_codes.dim() and rel_codes.size(-1) % 4 == 0 else 1
            return rel_codes.new_zeros((0, per_class, 4))
        if rel_codes.numel() % (4 * n) != 0:
            raise ValueError(f"rel_codes must hold 4 * C values per box for the {n} boxes, got shape "
                             f"{tuple(rel_codes.shape)}")
        return self.decode_single(rel_codes.reshape(n, -1), boxes).reshape(n, -1, 4)

    def decode_single(self, rel_codes: torch.Tensor, boxes: torch.Tensor, image_size=None) -> torch.Tensor:
        """Tensor[N, 4 * C] codes, Tensor[N, 4] boxes -> Tensor[N, 4 * C] decoded boxes.

        With image_size = (height, width) the decoded boxes are also clipped to the image in the
        same pass, exactly as clip_boxes_to_image(decode_single(rel_codes, boxes), image_size).
        """
        check_tensor("rel_codes", rel_codes, ndim=2)
        check_tensor("boxes", boxes, ndim=2, last_dim=4)
        check_float("rel_codes", rel_codes)
        if rel_codes.size(1) % 4 != 0 or rel_codes.size(0) != boxes.size(0):
            raise ValueError(f"rel_codes must be [N, 4 * C] for boxes [N, 4], got {tuple(rel_codes.shape)} "
                             f"and {tuple(boxes.shape)}")
        _check_same_device("rel_codes", rel_codes, "boxes", boxes)
        if image_size is not None:
            if not isinstance(image_size, (tuple, list, torch.Size)) or len(image_size) != 2:
                raise ValueError(f"image_size must be (height, width), got {image_size!r}")
            image_size = list(image_size)
        return torch.ops.roiops.box_decode(
            rel_codes, boxes.to(rel_codes.dtype), list(self.weights), float(self.bbox_xform_clip), image_size
        )


def _check_same_device(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.device != b.device:
        raise ValueError(f"{name_a} and {name_b} must be on the same device, got {a.device} and {b.device}")
