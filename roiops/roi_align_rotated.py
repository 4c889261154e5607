"""RoIAlignRotated: RoIAlign over rotated boxes (Detectron2's ``ROIAlignRotated``, MMCV's
``RoIAlignRotated``).

A RoI is (x_ctr, y_ctr, width, height, angle) in input-image pixels, the angle in degrees and
counter-clockwise on screen (roiops/rotated.py states the convention). The box is cut into
output_size bins along its own width and height; each bin averages sampling_ratio x
sampling_ratio bilinear samples at the centres of an even sub-grid of the bin, placed in the box's
rotated frame: the sample at local offset (xx, yy) from the box centre reads the map at
``(cx + xx cos a + yy sin a, cy - xx sin a + yy cos a)``, with (cx, cy) = spatial_scale *
(x_ctr, y_ctr) - offset. sampling_ratio <= 0 is adaptive: ceil(size / output_size) samples per bin
side, from the box's own width and height on the map.

Pixel model, as roiops.roi_align: ``aligned=True`` (Detectron2's only mode, MMCV's default) shifts
the centre by -0.5 map pixel (offset = 0.5) and keeps the box's size, however small;
``aligned=False`` uses offset 0 and raises a width or height below 1 map pixel to 1, keeping the
centre. The bilinear weights are roi_align's (csrc/common/roi_align_math.h): a sample outside
[-1, H] x [-1, W] contributes 0 but counts in the average, one in [-1, 0] or [H - 1, H] reads the
border pixel. At angle 0 the samples are roi_align's for the box (x_ctr -+ width / 2, y_ctr -+
height / 2) (up to rounding), except for aligned=False boxes under 1 map pixel, which roi_align
extends from their corner rather than around their centre.

Degenerate RoIs, defined: a RoI with a NaN or infinite value, or a negative width or height,
pools to 0 and gets no gradient (Detectron2 asserts instead).

Derivatives: with respect to the input (the backward op roi_align_rotated_backward, itself
differentiable: roi_align_rotated is linear in the input), not with respect to the boxes.

MMCV's ``clockwise=True`` negates the angles first (MMCV's default False is this convention);
MMCV's angles are in radians: multiply them by 180 / pi.
"""

from numbers import Integral

import torch
from torch.jit.annotations import BroadcastingList2

from roiops._validation import check_float, check_same, check_tensor, in_common_float_dtype
from roiops.roi_align import RoIModule, check_spatial_scale, pair_output_size, rois_from_boxes_unchecked

__all__ = ["roi_align_rotated", "RoIAlignRotated"]


def rotated_boxes_to_rois(boxes, name: str = "rois") -> torch.Tensor:
    """Tensor[K, 6] (batch index, x_ctr, y_ctr, width, height, angle) from either that or a list of
    Tensor[L_i, 5] (one per image)."""
    if isinstance(boxes, torch.Tensor):
        check_tensor(name, boxes, ndim=2, last_dim=6)
        return boxes
    if not isinstance(boxes, (list, tuple)):
        raise TypeError(
            f"{name} must be a Tensor[K, 6] or a list of Tensor[L_i, 5], got {type(boxes).__name__}"
        )
    if len(boxes) == 0:
        raise ValueError(f"{name} is an empty list: pass one Tensor[L_i, 5] per image (L_i may be 0)")
    for i, b in enumerate(boxes):
        check_tensor(f"{name}[{i}]", b, ndim=2, last_dim=5)
        check_same(f"{name}[0]", boxes[0], f"{name}[{i}]", b)
    rows = [
        torch.cat([torch.full((b.size(0), 1), float(i), dtype=b.dtype, device=b.device), b], dim=1)
        for i, b in enumerate(boxes)
    ]
    return torch.cat(rows, dim=0)


# An FX leaf, as roi_align: symbolic tracing records the call instead of tracing into the checks.
@torch.fx.wrap
def roi_align_rotated(
    input: torch.Tensor,
    rois: torch.Tensor | list[torch.Tensor],
    output_size: BroadcastingList2[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = 0,
    aligned: bool = True,
    clockwise: bool = False,
) -> torch.Tensor:
    """RoIAlignRotated (see the module docstring).

    Args:
        input: Tensor[N, C, H, W], float32, float64, float16 or bfloat16 (the half types
            accumulate in float32), contiguous or channels_last.
        rois: Tensor[K, 6] (batch index, x_ctr, y_ctr, width, height, angle in degrees), or a list
            of N Tensor[L_i, 5] (the boxes of image i); input-image pixels; input's device; any
            float dtype (one other than input's: pooled in the wider of the two, output in
            input's dtype, as roi_align).
        output_size: int or (height, width) of the pooled grid.
        spatial_scale: feature-map pixels per input-image pixel, > 0.
        sampling_ratio: samples per bin side; <= 0 adaptive.
        aligned: half-pixel shift (True, Detectron2) or the 1-pixel minimum size (False).
        clockwise: MMCV's flag; True negates the angles.

    Returns:
        Tensor[K, C, output_height, output_width] of input's dtype, channels_last in memory when
        input is. Differentiable with respect to input (not to rois).

    Raises:
        TypeError / ValueError naming the argument: input not a 4-d float tensor; rois not
        [K, 6] or a list of [L_i, 5]; rois not float; device mismatch; output_size not positive;
        spatial_scale <= 0; a batch index that is negative, fractional or >= N.

    Under torch.jit.script only the native op's checks run (TorchScript cannot run these Python
    checks).
    """
    if torch.jit.is_scripting():
        rois = rois_from_boxes_unchecked(rois)
        if clockwise:
            rois = torch.cat([rois[:, :5], -rois[:, 5:]], dim=1)
        x, rois = in_common_float_dtype(input, rois)
        return torch.ops.roiops.roi_align_rotated(
            x, rois, spatial_scale, output_size[0], output_size[1], sampling_ratio, aligned
        ).to(input.dtype)
    return _roi_align_rotated_checked(
        input, rois, output_size, spatial_scale, sampling_ratio, aligned, clockwise
    )


@torch.jit.unused
def _roi_align_rotated_checked(
    input, rois, output_size, spatial_scale, sampling_ratio, aligned, clockwise
) -> torch.Tensor:
    check_tensor("input", input, ndim=4)
    check_float("input", input)
    rois = rotated_boxes_to_rois(rois)
    check_float("rois", rois)
    check_same("input", input, "rois", rois, mixed_float=True)
    pooled_height, pooled_width = pair_output_size(output_size)
    spatial_scale = check_spatial_scale(spatial_scale)
    if isinstance(sampling_ratio, bool) or not isinstance(sampling_ratio, Integral):
        raise TypeError(f"sampling_ratio must be an int, got {type(sampling_ratio).__name__}")
    for name, flag in (("aligned", aligned), ("clockwise", clockwise)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    if clockwise:
        rois = torch.cat([rois[:, :5], -rois[:, 5:]], dim=1)
    x, rois = in_common_float_dtype(input, rois)
    return torch.ops.roiops.roi_align_rotated(
        x, rois, spatial_scale, pooled_height, pooled_width, int(sampling_ratio), aligned
    ).to(input.dtype)


class RoIAlignRotated(RoIModule):
    """Module form: ``RoIAlignRotated(output_size, spatial_scale, sampling_ratio, aligned=True,
    clockwise=False)`` called as ``m(input, rois)``; Detectron2's ``ROIAlignRotated(output_size,
    spatial_scale, sampling_ratio)`` and MMCV's ``RoIAlignRotated`` take the same arguments."""

    def __init__(
        self,
        output_size,
        spatial_scale: float,
        sampling_ratio: int = 0,
        aligned: bool = True,
        clockwise: bool = False,
    ):
        super().__init__(output_size, spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)
        self.clockwise = bool(clockwise)

    def forward(self, input: torch.Tensor, rois: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        output_size = [self.output_size[0], self.output_size[1]]
        return roi_align_rotated(
            input,
            rois,
            output_size,
            self.spatial_scale,
            self.sampling_ratio,
            self.aligned,
            self.clockwise,
        )

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, sampling_ratio={self.sampling_ratio}, aligned={self.aligned}, "
            f"clockwise={self.clockwise}"
        )
