"""Box operations. Boxes are Tensor[N, 4] in (x1, y1, x2, y2) order, in pixels of whatever image or
feature map they refer to; a box with x2 <= x1 or y2 <= y1 is empty (area 0).

box_iou has native CPU and CUDA kernels (its [N, M] output would otherwise need [N, M, 2]
intermediates); the other ops stay plain PyTorch on every device: element-wise passes over [N, 4]
are bandwidth-bound, so a custom kernel would save launches, not arithmetic."""

import torch

from roiops._autocast import autocast_active, compute_dtype
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

    Under torch.autocast (CPU, CUDA) the boxes may differ in dtype: both are cast up to float32
    (float64 if either is float64) and the IoU comes back in that dtype, not in half precision,
    since it is compared with matching thresholds (roiops/_autocast.py).

    Raises:
        TypeError / ValueError naming the argument for a non-tensor, a wrong shape, a non-float
        dtype, or a dtype / device mismatch.
    """
    _check_box_pair(boxes1, boxes2)
    return torch.ops.roiops.box_iou(boxes1, boxes2)


def generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise generalized IoU (Rezatofighi et al. 2019): IoU - (C - U) / C, C the area of the
    smallest box enclosing both, U their union.

    Args:
        boxes1: Tensor[N, 4] (x1, y1, x2, y2), float dtype.
        boxes2: Tensor[M, 4], same dtype and device.

    Returns:
        Tensor[N, M] in [-1, 1], boxes1's dtype (float16 / bfloat16 are computed in float32 and
        rounded back). Matches torchvision.ops.generalized_box_iou where that is finite; where it
        divides 0 by 0 (empty boxes) the IoU term is 0 and, when C is 0 too, so is the penalty.
        Under torch.autocast (CPU, CUDA) as box_iou: mixed dtypes accepted, computed and returned
        in float32 (float64 if either input is float64).

    Raises:
        TypeError / ValueError naming the argument for a non-tensor, a wrong shape, a non-float
        dtype, or a dtype / device mismatch.
    """
    _check_box_pair(boxes1, boxes2)
    if autocast_active(boxes1):
        # Plain PyTorch, so no dispatcher kernel: the same rule as box_iou's, applied here.
        out_dtype = compute_dtype(boxes1, boxes2)
        boxes1, boxes2 = boxes1.to(out_dtype), boxes2.to(out_dtype)
    else:
        out_dtype = boxes1.dtype
    if out_dtype in (torch.float16, torch.bfloat16):
        boxes1, boxes2 = boxes1.float(), boxes2.float()
    a = boxes1[:, None, :]  # [N, 1, 4]
    b = boxes2[None, :, :]  # [1, M, 4]
    # Intersection and enclosing box side lengths, each [N, M, 2].
    inter_wh = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])).clamp_(min=0)
    hull_wh = (torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])).clamp_(min=0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    hull = hull_wh[..., 0] * hull_wh[..., 1]
    wh1 = (boxes1[:, 2:] - boxes1[:, :2]).clamp(min=0)
    wh2 = (boxes2[:, 2:] - boxes2[:, :2]).clamp(min=0)
    union = (wh1[:, 0] * wh1[:, 1])[:, None] + (wh2[:, 0] * wh2[:, 1])[None, :] - inter
    iou = torch.where(union > 0, inter / union, 0.0)
    penalty = torch.where(hull > 0, (hull - union) / hull, 0.0)
    return (iou - penalty).to(out_dtype)


def clip_boxes_to_image(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Clamps x coordinates to [0, width] and y coordinates to [0, height].

    Args:
        boxes: Tensor[..., 4] (x1, y1, x2, y2), any real dtype.
        size: (height, width) of the image, non-negative numbers (ints or SymInts).

    Returns:
        A new Tensor[..., 4], same dtype (NaN coordinates stay NaN, as in torch.clamp).

    Raises:
        TypeError / ValueError naming ``boxes`` or ``size``.
    """
    _check_boxes_nd(boxes)
    if not isinstance(size, (tuple, list, torch.Size)) or len(size) != 2:
        raise ValueError(f"size must be (height, width), got {size!r}")
    height, width = size
    out = boxes.clone()
    out[..., 0::2].clamp_(min=0, max=width)
    out[..., 1::2].clamp_(min=0, max=height)
    return out


def remove_small_boxes(boxes: torch.Tensor, min_size: float) -> torch.Tensor:
    """Indices of the boxes whose width and height are both >= min_size.

    Args:
        boxes: Tensor[N, 4] (x1, y1, x2, y2).
        min_size: minimum side length, in the boxes' units.

    Returns:
        Tensor[K] int64, increasing. A box with a NaN coordinate is removed.

    Raises:
        TypeError / ValueError naming ``boxes`` or ``min_size``.
    """
    check_tensor("boxes", boxes, ndim=2, last_dim=4)
    if not isinstance(min_size, (int, float)) or isinstance(min_size, bool):
        raise TypeError(f"min_size must be a number, got {type(min_size).__name__}")
    wh = boxes[:, 2:] - boxes[:, :2]
    return torch.where((wh >= min_size).all(dim=1))[0]


BOX_FORMATS = ("xyxy", "xywh", "cxcywh")


def _check_box_pair(boxes1, boxes2) -> None:
    """boxes1 [N, 4] and boxes2 [M, 4] of one float dtype (or two, under autocast), on one device."""
    check_tensor("boxes1", boxes1, ndim=2, last_dim=4)
    check_tensor("boxes2", boxes2, ndim=2, last_dim=4)
    check_float("boxes1", boxes1)
    check_float("boxes2", boxes2)
    check_same("boxes1", boxes1, "boxes2", boxes2, autocast=True)


def _check_boxes_nd(boxes) -> None:
    check_tensor("boxes", boxes)
    if boxes.dim() == 0 or boxes.size(-1) != 4:
        raise ValueError(f"boxes must be Tensor[..., 4], got shape {tuple(boxes.shape)}")


def box_convert(boxes: torch.Tensor, in_fmt: str, out_fmt: str) -> torch.Tensor:
    """Converts boxes between corner and size formats.

    Formats: ``xyxy`` (x1, y1, x2, y2), ``xywh`` (x1, y1, width, height), ``cxcywh`` (centre x,
    centre y, width, height). Centres are (x1 + x2) / 2, i.e. continuous coordinates with no +1.
    Between ``xywh`` and ``cxcywh`` the width and height are carried over unchanged (torchvision
    goes through xyxy and rounds them; the results agree to float rounding).

    Args:
        boxes: Tensor[..., 4], float dtype.
        in_fmt, out_fmt: one of "xyxy", "xywh", "cxcywh".

    Returns:
        A new Tensor[..., 4] of the same dtype (a copy when in_fmt == out_fmt).

    Raises:
        ValueError naming ``in_fmt`` / ``out_fmt`` for an unknown format; TypeError / ValueError
        naming ``boxes`` for a non-tensor, a last dimension other than 4, or a non-float dtype.
    """
    _check_boxes_nd(boxes)
    check_float("boxes", boxes)
    for name, fmt in (("in_fmt", in_fmt), ("out_fmt", out_fmt)):
        if fmt not in BOX_FORMATS:
            raise ValueError(f"{name} must be one of {BOX_FORMATS}, got {fmt!r}")
    if in_fmt == out_fmt:
        return boxes.clone()
    first, second = boxes[..., :2], boxes[..., 2:]
    if in_fmt == "xyxy":
        size = second - first
        start = first if out_fmt == "xywh" else (first + second) / 2
        return torch.cat((start, size), dim=-1)
    if out_fmt == "xyxy":
        if in_fmt == "xywh":
            return torch.cat((first, first + second), dim=-1)
        half = 0.5 * second
        return torch.cat((first - half, first + half), dim=-1)
    # Between the two size formats: only the first pair moves, by half the size.
    shifted = first + 0.5 * second if in_fmt == "xywh" else first - 0.5 * second
    return torch.cat((shifted, second), dim=-1)
