"""RoIAlign (He et al., Mask R-CNN, 2017): bilinear pooling of regions of a feature map into a fixed
grid, with no quantization of the region or its bins.

Pixel model. A box is (x1, y1, x2, y2) in input-image pixels; spatial_scale maps it onto the
feature map. With ``aligned=False`` (the paper's and torchvision's default) feature pixel (h, w)
sits at the point (w, h), and a box is at least 1x1 map pixels; with ``aligned=True`` (Detectron2's
convention, ``test_aligned_true_matches_half_pixel_model``) the box is shifted by -0.5 pixel first,
so that a box covering pixels [0, W) x [0, H) samples exactly the pixel centres, and it keeps its
size, however small. Each of the output_size bins averages sampling_ratio x sampling_ratio
bilinear samples at the centres of an even sub-grid (sampling_ratio <= 0: ceil(box / output_size)
per axis). A sample outside [-1, H] x [-1, W] contributes 0 (it still counts in the average); one
in [-1, 0] or [H - 1, H] reads the border pixel.

Degenerate boxes, defined: a box with a NaN or infinite coordinate pools to 0 and gets no
gradient. A box with x2 < x1 and aligned=True has no adaptive samples and pools to 0. A huge box
(1e7 pixels and beyond) is computed as defined, visiting only the samples that land on the map;
the adaptive count is capped at 2**20 samples per bin side (roi_align_math.h).

Derivatives. The output is differentiable with respect to the input and the box coordinates (x1,
y1, x2, y2; not the batch index), twice: the box gradient is piecewise smooth in the sample
positions, with kinks where a sample crosses a pixel row or column, the map border, or where the
adaptive sample count or aligned=False's 1-pixel minimum changes; there the one-sided derivative
of the cell the sample lies in is used. Third derivatives with respect to the boxes raise.
"""

import math
from numbers import Integral, Real

import torch
from torch import nn
from torch.jit.annotations import BroadcastingList2

from roiops._validation import (
    BoxesShapeError,
    NotATensorError,
    TypeAssertionError,
    TypeRuntimeError,
    ValueRuntimeError,
    check_float,
    check_same,
    check_tensor,
    in_common_float_dtype,
)

__all__ = ["roi_align", "RoIAlign"]


def boxes_to_rois(boxes, name: str = "boxes") -> torch.Tensor:
    """Tensor[K, 5] (batch index, x1, y1, x2, y2) from either that or a list of Tensor[L_i, 4]."""
    if isinstance(boxes, torch.Tensor):
        check_tensor(name, boxes, ndim=2, last_dim=5, shape_error=BoxesShapeError)
        return boxes
    if not isinstance(boxes, (list, tuple)):
        raise TypeAssertionError(
            f"{name} must be a Tensor[K, 5] or a list of Tensor[L_i, 4], got {type(boxes).__name__}"
        )
    if len(boxes) == 0:
        raise ValueRuntimeError(f"{name} is an empty list: pass one Tensor[L_i, 4] per image (L_i may be 0)")
    for i, b in enumerate(boxes):
        check_tensor(f"{name}[{i}]", b, ndim=2, last_dim=4, shape_error=BoxesShapeError)
        check_same(f"{name}[0]", boxes[0], f"{name}[{i}]", b)
    return rois_from_boxes_unchecked(list(boxes))


def rois_from_boxes_unchecked(boxes: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """boxes_to_rois without the argument checks; also what TorchScript runs (the native op's
    checks remain there: they name ``rois`` rather than ``boxes``)."""
    if isinstance(boxes, torch.Tensor):
        return boxes
    rows = [
        torch.cat([torch.full((b.size(0), 1), float(i), dtype=b.dtype, device=b.device), b], dim=1)
        for i, b in enumerate(boxes)
    ]
    return torch.cat(rows, dim=0)


def pair_output_size(output_size) -> tuple[int, int]:
    """(height, width) from an int or a pair; raises ValueError unless both are positive ints."""
    if isinstance(output_size, (Integral, torch.SymInt)) and not isinstance(output_size, bool):
        output_size = (output_size, output_size)
    if (
        not isinstance(output_size, (tuple, list))
        or len(output_size) != 2
        or any(isinstance(s, bool) or not isinstance(s, (Integral, torch.SymInt)) for s in output_size)
    ):
        raise ValueRuntimeError(
            f"output_size must be an int or a pair of ints (height, width), got {output_size!r}"
        )
    h, w = int(output_size[0]), int(output_size[1])
    if h <= 0 or w <= 0:
        raise ValueRuntimeError(f"output_size must be positive, got {(h, w)}")
    return h, w


def check_spatial_scale(spatial_scale) -> float:
    if isinstance(spatial_scale, bool) or not isinstance(spatial_scale, Real):
        raise TypeRuntimeError(f"spatial_scale must be a float, got {type(spatial_scale).__name__}")
    spatial_scale = float(spatial_scale)
    if not (spatial_scale > 0 and math.isfinite(spatial_scale)):
        raise ValueError(f"spatial_scale must be positive and finite, got {spatial_scale}")
    return spatial_scale


def check_roi_call(input: torch.Tensor, boxes, *, input_not_a_tensor: type = NotATensorError) -> torch.Tensor:
    """Validates input against the boxes and returns the boxes as rois Tensor[K, 5]; input and
    boxes may have different floating dtypes (the caller runs ``in_common_float_dtype``). A
    non-tensor input raises ``input_not_a_tensor`` (torchvision's ps ops fail on it with
    RuntimeError, its roi_align with AttributeError)."""
    check_tensor("input", input, ndim=4, type_error=input_not_a_tensor)
    check_float("input", input)
    rois = boxes_to_rois(boxes)
    check_float("boxes", rois)
    check_same("input", input, "boxes", rois, mixed_float=True)
    return rois


# An FX leaf, as torchvision's: symbolic tracing records the call instead of tracing into the
# argument checks (which cannot inspect a Proxy).
@torch.fx.wrap
def roi_align(
    input: torch.Tensor,
    boxes: torch.Tensor | list[torch.Tensor],
    output_size: BroadcastingList2[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> torch.Tensor:
    """RoIAlign, a drop-in replacement for torchvision.ops.roi_align (see the module docstring).

    Args:
        input: Tensor[N, C, H, W], float32, float64, float16 or bfloat16 (the half types
            accumulate in float32), contiguous or channels_last.
        boxes: Tensor[K, 5] (batch index, x1, y1, x2, y2), or a list of N Tensor[L_i, 4]
            (x1, y1, x2, y2) of image i; input-image pixels; input's device; any float dtype
            (one other than input's: see "Mixed dtypes" below).
        output_size: int or (height, width) of the pooled grid.
        spatial_scale: feature-map pixels per input-image pixel (e.g. 1/16), > 0.
        sampling_ratio: samples per bin side; <= 0 for adaptive (ceil(box / output_size)).
        aligned: shift boxes by -0.5 pixel (pixel-centre model); see the module docstring.

    Returns:
        Tensor[K, C, output_height, output_width] of input's dtype, channels_last in memory when
        input is. Differentiable twice with respect to input and to the box coordinates
        (piecewise: sample positions move with the box; the adaptive sample count and
        aligned=False's 1-pixel minimum are treated as constants).

    Raises:
        TypeError / ValueError naming the argument: input not a 4-d float tensor; boxes not
        [K, 5] or a list of [L_i, 4]; boxes not float; device mismatch; output_size not positive;
        spatial_scale <= 0; a batch index that is negative, fractional or >= N.

    Mixed dtypes. input and boxes of different float dtypes (a bfloat16 map with float32 boxes,
    a float32 map with float64 boxes) are pooled in the wider of the two (float32 for float16 with
    bfloat16) and the output is cast to input's dtype, inside torch.autocast or not; the gradients
    come back in each argument's own dtype. The boxes are never rounded to the map's precision.
    torchvision raises RuntimeError for these calls outside autocast.

    Under torch.autocast (CPU, CUDA) input and boxes may differ in dtype (a float16 / bfloat16
    map with float32 boxes): both are cast up to float32 (float64 if either is), pooled, and the
    output is cast back to input's dtype, as torchvision does. The boxes are never rounded to half
    precision; the price is a float32 copy of the map per call (roiops/_autocast.py).

    Under torch.jit.script only the native op's checks run (TorchScript cannot run these
    Python checks; the op's messages call the boxes ``rois``).
    """
    if torch.jit.is_scripting():
        x, rois = in_common_float_dtype(input, rois_from_boxes_unchecked(boxes))
        return torch.ops.roiops.roi_align(
            x, rois, spatial_scale, output_size[0], output_size[1], sampling_ratio, aligned
        ).to(input.dtype)
    return _roi_align_checked(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)


@torch.jit.unused
def _roi_align_checked(input, boxes, output_size, spatial_scale, sampling_ratio, aligned) -> torch.Tensor:
    rois = check_roi_call(input, boxes)
    pooled_height, pooled_width = pair_output_size(output_size)
    spatial_scale = check_spatial_scale(spatial_scale)
    if isinstance(sampling_ratio, bool) or not isinstance(sampling_ratio, Integral):
        raise TypeRuntimeError(f"sampling_ratio must be an int, got {type(sampling_ratio).__name__}")
    if not isinstance(aligned, bool):
        raise TypeRuntimeError(f"aligned must be a bool, got {type(aligned).__name__}")
    x, rois = in_common_float_dtype(input, rois)
    return torch.ops.roiops.roi_align(
        x, rois, spatial_scale, pooled_height, pooled_width, int(sampling_ratio), aligned
    ).to(input.dtype)


class RoIModule(nn.Module):
    """What the RoI pooling modules share: ``output_size`` as a (height, width) pair,
    ``spatial_scale`` checked, and a repr that shows output_size as it was given (an int or a pair),
    as torchvision's does. Subclasses add their own arguments and ``forward``."""

    def __init__(self, output_size, spatial_scale: float):
        super().__init__()
        self.output_size = pair_output_size(output_size)
        as_given = isinstance(output_size, (int, tuple, list))
        self._output_size_arg = output_size if as_given else self.output_size
        self.spatial_scale = check_spatial_scale(spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self._output_size_arg}, spatial_scale={self.spatial_scale}"


class RoIAlign(RoIModule):
    """Module form of roi_align: ``RoIAlign(output_size, spatial_scale, sampling_ratio, aligned)``,
    called as ``m(input, boxes)``."""

    def __init__(self, output_size, spatial_scale: float, sampling_ratio: int, aligned: bool = False):
        super().__init__(output_size, spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)

    def forward(self, input: torch.Tensor, boxes: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        output_size = [self.output_size[0], self.output_size[1]]
        return roi_align(input, boxes, output_size, self.spatial_scale, self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
