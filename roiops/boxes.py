"""Box operations. Boxes are Tensor[N, 4] in (x1, y1, x2, y2) order, in pixels of whatever image or
feature map they refer to; a box with x2 <= x1 or y2 <= y1 is empty (area 0)."""

import torch

from roiops._validation import check_float, check_same, check_tensor


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Area of each box.

    Args:
        boxes: Tensor[N, 4] (x1, y1, x2, y2), any floating dtype, any device.

    Returns:
        Tensor[N] of the same dtype: (x2 - x1) * (y2 - y1), or 0 for an empty box (as box_iou
        counts it), never negative.
    """
    check_tensor("boxes", boxes, ndim=2, last_dim=4)
    check_float("boxes", boxes)
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0)
    return wh[:, 0] * wh[:, 1]


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise intersection over union, computed by one native kernel (no [N, M, 2] intermediates).

    Args:
        boxes1: Tensor[N, 4] (x1, y1, x2, y2).
        boxes2: Tensor[M, 4], same dtype and device as boxes1. float32, float64, float16, bfloat16
            (the half types are computed in float32).

    Returns:
        Tensor[N, M] of boxes1's dtype, each value in [0, 1]. Where the union is 0 (both boxes
        empty) the IoU is 0, not NaN as in torchvision; a box with a NaN coordinate has IoU 0 with
        everything.

    Raises:
        TypeError / ValueError naming the argument for a non-tensor, a wrong shape, a non-float
        dtype, or a dtype / device mismatch.
    """
    check_tensor("boxes1", boxes1, ndim=2, last_dim=4)
    check_tensor("boxes2", boxes2, ndim=2, last_dim=4)
    check_float("boxes1", boxes1)
    check_same("boxes1", boxes1, "boxes2", boxes2)
    return torch.ops.roiops.box_iou(boxes1, boxes2)
