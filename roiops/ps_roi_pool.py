"""Position-sensitive RoIPool (Dai et al., R-FCN, 2016): the average of each quantized bin, each
bin over its own group of input channels.

Channels: as ps_roi_align (``roiops/ps_roi_align.py``): C = C_out * PH * PW input channels, output
element (k, c, ph, pw) averages input channel ``(c * PH + ph) * PW + pw``; torchvision's
``channel_mapping`` is recomputed, never stored.

Bins (torchvision's definition, ``csrc/common/ps_roi_math.h``): the box corners are rounded to
map pixels (x * spatial_scale, half away from zero), the region is at least 1x1 (end - start, not
RoIPool's end - start + 1), bin (ph, pw) covers floor(ph * bin_h) .. ceil((ph + 1) * bin_h) of it,
clipped to [0, H - 1] x [0, W - 1]. That upper clip means the last row and column of the map are
never pooled, and a bin lying only in them is empty; torchvision's forward does exactly this, so
roiops' values equal torchvision's (float32 and float64: exactly, same additions in the same order).
The backward here is the true adjoint of that forward; torchvision's backward clips to H and W
instead, so its gradient differs from roiops' (and from its own forward's derivative) wherever a
bin reaches the last row or column. An empty bin (outside the map, or a box with a NaN or infinite
coordinate) gives 0 and no gradient. A batch index that is not an integer in [0, N) raises.
"""

import torch
from torch.jit.annotations import BroadcastingList2

from roiops._validation import TypeRuntimeError, in_common_float_dtype
from roiops.ps_roi_align import check_position_sensitive_channels
from roiops.roi_align import (
    RoIModule,
    check_roi_call,
    check_spatial_scale,
    pair_output_size,
    rois_from_boxes_unchecked,
)

__all__ = ["ps_roi_pool", "PSRoIPool"]


# An FX leaf, as torchvision's (see roi_align).
@torch.fx.wrap
def ps_roi_pool(
    input: torch.Tensor,
    boxes: torch.Tensor | list[torch.Tensor],
    output_size: BroadcastingList2[int],
    spatial_scale: float = 1.0,
) -> torch.Tensor:
    """Position-sensitive RoIPool, a drop-in replacement for torchvision.ops.ps_roi_pool (see the
    module docstring).

    Args:
        input: Tensor[N, C, H, W] with C = C_out * output_height * output_width; float32, float64,
            float16 or bfloat16 (summed in float32); contiguous or channels_last.
        boxes: Tensor[K, 5] (batch index, x1, y1, x2, y2) or a list of N Tensor[L_i, 4], input
            pixels, input's device, any float dtype (mixed dtypes: as roi_align, pooled in the
            wider of the two, output in input's dtype).
        output_size: int or (height, width).
        spatial_scale: feature-map pixels per input pixel, > 0.

    Returns:
        Tensor[K, C_out, output_height, output_width], input's dtype and memory format.
        Differentiable with respect to input (not the boxes).

    Raises:
        TypeError / ValueError naming the argument, as ps_roi_align (under torch.jit.script, only
        the native op's checks).

    Under torch.autocast (CPU, CUDA) as roi_pool: computed in float32, output cast back.
    """
    if torch.jit.is_scripting():
        x, rois = in_common_float_dtype(input, rois_from_boxes_unchecked(boxes))
        return torch.ops.roiops.ps_roi_pool(
            x, rois, spatial_scale, output_size[0], output_size[1]
        ).to(input.dtype)
    return _ps_roi_pool_checked(input, boxes, output_size, spatial_scale)


@torch.jit.unused
def _ps_roi_pool_checked(input, boxes, output_size, spatial_scale) -> torch.Tensor:
    rois = check_roi_call(input, boxes, input_not_a_tensor=TypeRuntimeError)
    pooled_height, pooled_width = pair_output_size(output_size)
    check_position_sensitive_channels(input, pooled_height, pooled_width)
    spatial_scale = check_spatial_scale(spatial_scale)
    x, rois = in_common_float_dtype(input, rois)
    return torch.ops.roiops.ps_roi_pool(x, rois, spatial_scale, pooled_height, pooled_width).to(input.dtype)


class PSRoIPool(RoIModule):
    """Module form of ps_roi_pool: ``PSRoIPool(output_size, spatial_scale)``, called as
    ``m(input, boxes)``."""

    def forward(self, input: torch.Tensor, boxes: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        return ps_roi_pool(input, boxes, [self.output_size[0], self.output_size[1]], self.spatial_scale)
