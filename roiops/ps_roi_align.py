"""Position-sensitive RoIAlign (Dai et al., R-FCN, 2016, with the bilinear sampling of He et al.,
Mask R-CNN): each bin of the pooled grid reads its own group of input channels.

Channels. The input has C = C_out * PH * PW channels for an output_size of (PH, PW): score maps
for every output channel and bin. Output element (k, c, ph, pw) pools input channel
``(c * PH + ph) * PW + pw`` over bin (ph, pw) of box k, and nothing else. torchvision's op computes
this index as a ``channel_mapping`` tensor for its backward; roiops recomputes it and never stores
it (the forward returns the pooled output only, as torchvision.ops.ps_roi_align does).

Pixel model. A box (x1, y1, x2, y2) in input-image pixels is scaled by spatial_scale and shifted by
-0.5 (roi_align's ``aligned=True``, the only model ps_roi_align has, torchvision's too): a box
covering pixels [0, W) x [0, H) samples the pixel centres, and a box keeps its size however small.
Each bin averages sampling_ratio x sampling_ratio bilinear samples (sampling_ratio <= 0: ceil(box
size / output size) per axis), exactly as roi_align (``roiops/roi_align.py``, the same native
arithmetic, ``csrc/common/roi_align_math.h``): a sample outside [-1, H] x [-1, W] contributes 0 and
still counts in the average, one in [-1, 0] or [H - 1, H] reads the border pixel.

Degenerate boxes, defined: a box with a NaN or infinite coordinate pools to 0. With adaptive
sampling a box with x2 <= x1 or y2 <= y1 has no samples and pools to 0, where torchvision divides 0
by 0 and returns NaN. Boxes partly or wholly outside the map pool the samples that land on it
(wholly outside: 0). A batch index that is not an integer in [0, N) raises.

Derivatives. Differentiable (twice) with respect to the input; the op is linear in it, its backward
is its adjoint. The boxes get no gradient, as in torchvision.
"""

from numbers import Integral

import torch
from torch.jit.annotations import BroadcastingList2

from roiops._validation import TypeRuntimeError, ValueRuntimeError, in_common_float_dtype
from roiops.roi_align import (
    RoIModule,
    check_roi_call,
    check_spatial_scale,
    pair_output_size,
    rois_from_boxes_unchecked,
)

__all__ = ["ps_roi_align", "PSRoIAlign"]


def check_position_sensitive_channels(input: torch.Tensor, pooled_height: int, pooled_width: int) -> None:
    """Raises a ValueError (also torchvision's RuntimeError) unless input's channel count is a
    multiple of output_size's PH * PW."""
    bins = pooled_height * pooled_width
    if input.size(1) % bins != 0:
        raise ValueRuntimeError(
            f"input must have a multiple of output_size height * width = {pooled_height} * {pooled_width}"
            f" = {bins} channels (one group of score maps per bin), got {input.size(1)}"
        )


# An FX leaf, as torchvision's (see roi_align).
@torch.fx.wrap
def ps_roi_align(
    input: torch.Tensor,
    boxes: torch.Tensor | list[torch.Tensor],
    output_size: BroadcastingList2[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
) -> torch.Tensor:
    """Position-sensitive RoIAlign, a drop-in replacement for torchvision.ops.ps_roi_align (see the
    module docstring).

    Args:
        input: Tensor[N, C, H, W] with C = C_out * output_height * output_width; float32, float64,
            float16 or bfloat16 (the half types accumulate in float32); contiguous or channels_last.
        boxes: Tensor[K, 5] (batch index, x1, y1, x2, y2), or a list of N Tensor[L_i, 4]
            (x1, y1, x2, y2) of image i; input-image pixels; input's device; any float dtype
            (one other than input's: pooled in the wider of the two, output in input's dtype,
            as roi_align).
        output_size: int or (height, width) of the pooled grid.
        spatial_scale: feature-map pixels per input-image pixel (e.g. 1/16), > 0.
        sampling_ratio: samples per bin side; <= 0 for adaptive (ceil(box / output_size)).

    Returns:
        Tensor[K, C_out, output_height, output_width] of input's dtype, channels_last in memory
        when input is. Differentiable with respect to input (not the boxes).

    Raises:
        TypeError / ValueError naming the argument: input not a 4-d float tensor, or its channel
        count not a multiple of output_height * output_width; boxes not [K, 5] or a list of
        [L_i, 4]; boxes not float; device mismatch; output_size not positive; spatial_scale
        <= 0; a batch index that is negative, fractional or >= N. Each is also an instance of what
        torchvision raises there (RuntimeError, AssertionError, IndexError), as roi_align's.

    Under torch.autocast (CPU, CUDA) as roi_align: a float16 / bfloat16 map with float32 boxes is
    pooled in float32 and the output cast back to the map's dtype. Under torch.jit.script only the
    native op's checks run (they call the boxes ``rois``).
    """
    if torch.jit.is_scripting():
        x, rois = in_common_float_dtype(input, rois_from_boxes_unchecked(boxes))
        return torch.ops.roiops.ps_roi_align(
            x, rois, spatial_scale, output_size[0], output_size[1], sampling_ratio
        ).to(input.dtype)
    return _ps_roi_align_checked(input, boxes, output_size, spatial_scale, sampling_ratio)


@torch.jit.unused
def _ps_roi_align_checked(input, boxes, output_size, spatial_scale, sampling_ratio) -> torch.Tensor:
    rois = check_roi_call(input, boxes, input_not_a_tensor=TypeRuntimeError)
    pooled_height, pooled_width = pair_output_size(output_size)
    check_position_sensitive_channels(input, pooled_height, pooled_width)
    spatial_scale = check_spatial_scale(spatial_scale)
    if isinstance(sampling_ratio, bool) or not isinstance(sampling_ratio, Integral):
        raise TypeRuntimeError(f"sampling_ratio must be an int, got {type(sampling_ratio).__name__}")
    x, rois = in_common_float_dtype(input, rois)
    return torch.ops.roiops.ps_roi_align(
        x, rois, spatial_scale, pooled_height, pooled_width, int(sampling_ratio)
    ).to(input.dtype)


class PSRoIAlign(RoIModule):
    """Module form of ps_roi_align: ``PSRoIAlign(output_size, spatial_scale, sampling_ratio)``, called
    as ``m(input, boxes)``."""

    def __init__(self, output_size, spatial_scale: float, sampling_ratio: int):
        super().__init__(output_size, spatial_scale)
        self.sampling_ratio = int(sampling_ratio)

    def forward(self, input: torch.Tensor, boxes: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        output_size = [self.output_size[0], self.output_size[1]]
        return ps_roi_align(input, boxes, output_size, self.spatial_scale, self.sampling_ratio)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, sampling_ratio={self.sampling_ratio}"
