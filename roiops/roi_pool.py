"""RoIPool (Girshick, Fast R-CNN, 2015): the max over each bin of a quantized region.

The box corners are rounded to feature-map pixels (x * spatial_scale, half away from zero), the
region is at least 1x1, bin (ph, pw) covers pixels floor(ph * bin_h) .. ceil((ph + 1) * bin_h) of
it, clipped to the map. The backward routes each bin's gradient to its argmax pixel. Ties go to the
first pixel in row-major order; a NaN in a bin wins (output NaN, as torch.max). An empty bin
(outside the map, or a box with a NaN coordinate) gives 0 and no gradient.
"""

import torch
from torch.jit.annotations import BroadcastingList2

from roiops._validation import in_common_float_dtype
from roiops.roi_align import (
    RoIModule,
    check_roi_call,
    check_spatial_scale,
    pair_output_size,
    rois_from_boxes_unchecked,
)

__all__ = ["roi_pool", "RoIPool"]


# An FX leaf, as torchvision's (see roi_align).
@torch.fx.wrap
def roi_pool(
    input: torch.Tensor,
    boxes: torch.Tensor | list[torch.Tensor],
    output_size: BroadcastingList2[int],
    spatial_scale: float = 1.0,
) -> torch.Tensor:
    """RoIPool, a drop-in replacement for torchvision.ops.roi_pool.

    Args:
        input: Tensor[N, C, H, W], float32, float64, float16 or bfloat16, contiguous or
            channels_last.
        boxes: Tensor[K, 5] (batch index, x1, y1, x2, y2) or a list of N Tensor[L_i, 4], input
            pixels, input's device, any float dtype (mixed dtypes: as roi_align, pooled in the
            wider of the two, output in input's dtype).
        output_size: int or (height, width).
        spatial_scale: feature-map pixels per input pixel, > 0.

    Returns:
        Tensor[K, C, output_height, output_width], input's dtype and memory format.

    Raises:
        TypeError / ValueError naming the argument, as roi_align (under torch.jit.script, only
        the native op's checks).

    Under torch.autocast (CPU, CUDA) as roi_align: computed in float32 (float64 if an input is),
    output cast back to input's dtype (torchvision registers this for CUDA only; roiops for both).
    """
    if torch.jit.is_scripting():
        x, rois = in_common_float_dtype(input, rois_from_boxes_unchecked(boxes))
        output, _argmax = torch.ops.roiops.roi_pool(x, rois, spatial_scale, output_size[0], output_size[1])
        return output.to(input.dtype)
    return _roi_pool_checked(input, boxes, output_size, spatial_scale)


@torch.jit.unused
def _roi_pool_checked(input, boxes, output_size, spatial_scale) -> torch.Tensor:
    rois = check_roi_call(input, boxes)
    pooled_height, pooled_width = pair_output_size(output_size)
    spatial_scale = check_spatial_scale(spatial_scale)
    x, rois = in_common_float_dtype(input, rois)
    output, _argmax = torch.ops.roiops.roi_pool(x, rois, spatial_scale, pooled_height, pooled_width)
    return output.to(input.dtype)


class RoIPool(RoIModule):
    """Module form of roi_pool: ``RoIPool(output_size, spatial_scale)``, called as ``m(input, boxes)``."""

    def forward(self, input: torch.Tensor, boxes: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        return roi_pool(input, boxes, [self.output_size[0], self.output_size[1]], self.spatial_scale)
