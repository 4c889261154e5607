"""Rotated boxes: IoU (box_iou_rotated) and non-maximum suppression (nms_rotated,
batched_nms_rotated), as Detectron2 defines them.

Convention. A rotated box is a row (x_ctr, y_ctr, width, height, angle) of a Tensor[N, 5], in
pixels, the angle in degrees and counter-clockwise as seen on screen (image y axis pointing down;
Detectron2's ``RotatedBoxes``): the box's local point (u, v) (u along the width, v along the
height, from the centre) lies at ``(x_ctr + u cos a + v sin a, y_ctr - u sin a + v cos a)``. A box
and the same box turned by 180 degrees, or with width and height swapped and turned by 90
degrees, are the same rectangle.

MMCV's ``clockwise`` flag is offered with MMCV's default: ``clockwise=True`` is this convention
(MMCV passes such angles to the kernel unchanged), ``clockwise=False`` negates every angle first.
MMCV's angles are in radians: multiply them by 180 / pi. MMCV's ``mode='iof'`` and its
``nms_rotated`` return value (boxes with scores, indices) are not offered.

IoU is exact polygon intersection (one rectangle clipped by the other's four edges), computed in
float64 on the CPU (the input dtype on CUDA, float32 for the half types) in a frame centred on the
first box of the pair, so two boxes far from the origin keep the precision of small ones; the
inputs' own precision remains (a float32 centre at 1e6 is known to 1/16 pixel, one at 1e7 to 1
pixel). Degenerate cases, defined: identical boxes (same centre, size and rotation, including
angles 360 degrees apart) have IoU exactly 1; a box with width or height <= 0 or a non-finite value
has IoU 0 with every box (never NaN), so NMS keeps it and it suppresses nothing; touching boxes
have IoU 0.

NMS rules are roiops.nms's: rank by decreasing score, equal scores by lower index, NaN scores last;
a box is suppressed when its IoU with a kept box of higher rank is strictly greater than
iou_threshold (iou_threshold < 0 keeps only the top box, >= 1 keeps every box).
"""

import torch

from roiops._validation import check_float, check_same, check_tensor
from roiops.nms import _check_number

__all__ = ["box_iou_rotated", "nms_rotated", "batched_nms_rotated"]


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def _oriented(boxes: torch.Tensor, clockwise: bool) -> torch.Tensor:
    """boxes in this module's convention: MMCV's clockwise=False negates the angle."""
    if clockwise:
        return boxes
    return torch.cat([boxes[:, :4], -boxes[:, 4:]], dim=1)


def _check_rotated_boxes(name: str, boxes) -> None:
    check_tensor(name, boxes, ndim=2, last_dim=5)
    check_float(name, boxes)


# The three public functions are FX leaves, as roiops.box_iou and roiops.nms.
@torch.fx.wrap
def box_iou_rotated(
    boxes1: torch.Tensor, boxes2: torch.Tensor, aligned: bool = False, clockwise: bool = True
) -> torch.Tensor:
    """IoU of rotated boxes (Detectron2's ``pairwise_iou_rotated``; MMCV's ``box_iou_rotated``).

    Args:
        boxes1: Tensor[N, 5] (x_ctr, y_ctr, width, height, angle in degrees), float32, float64,
            float16 or bfloat16.
        boxes2: Tensor[M, 5], same dtype and device.
        aligned: False: all pairs, Tensor[N, M]. True: IoU of matching rows, Tensor[N] (N == M).
        clockwise: MMCV's flag (see the module docstring); True is Detectron2's convention.

    Returns:
        IoUs in [0, 1] of the boxes' dtype (under autocast: float32).

    Raises:
        TypeError / ValueError naming the argument: not a tensor, not [*, 5], not floating, dtype
        or device mismatch, aligned with N != M.
    """
    if not torch.jit.is_scripting():  # TorchScript runs the native op's checks only
        _check_rotated_boxes("boxes1", boxes1)
        _check_rotated_boxes("boxes2", boxes2)
        check_same("boxes1", boxes1, "boxes2", boxes2, autocast=True)
        aligned = _check_bool("aligned", aligned)
        clockwise = _check_bool("clockwise", clockwise)
        if aligned and boxes1.size(0) != boxes2.size(0):
            raise ValueError(
                f"aligned=True needs as many boxes2 as boxes1, got {boxes1.size(0)} and {boxes2.size(0)}"
            )
    return torch.ops.roiops.box_iou_rotated(
        _oriented(boxes1, clockwise), _oriented(boxes2, clockwise), aligned
    )


def _check_boxes_scores(boxes, scores) -> None:
    _check_rotated_boxes("boxes", boxes)
    check_tensor("scores", scores, ndim=1)
    check_float("scores", scores)
    check_same("boxes", boxes, "scores", scores, autocast=True)
    if scores.size(0) != boxes.size(0):
        raise ValueError(
            f"scores must have one entry per box: boxes {tuple(boxes.shape)}, scores {tuple(scores.shape)}"
        )


@torch.fx.wrap
def nms_rotated(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, clockwise: bool = True
) -> torch.Tensor:
    """Greedy NMS of rotated boxes (Detectron2's ``nms_rotated``).

    Visits boxes by rank and keeps each one that no already-kept box overlaps with IoU >
    iou_threshold (box_iou_rotated's IoU). Only kept boxes whose bounds can overlap a candidate
    are compared with it (a grid over the centres), so clustered inputs cost far less than N^2
    polygon clippings.

    Args:
        boxes: Tensor[N, 5] (x_ctr, y_ctr, width, height, angle in degrees), float dtype.
        scores: Tensor[N], same dtype and device (under autocast, any float dtype).
        iou_threshold: suppress boxes overlapping a kept one with IoU strictly above this.
        clockwise: MMCV's flag (see the module docstring).

    Returns:
        Tensor[K] int64 indices of the kept boxes by decreasing score (ties: lower index first;
        NaN scores last).

    Raises:
        TypeError / ValueError naming the argument, as roiops.nms.
    """
    if not torch.jit.is_scripting():  # TorchScript runs the native op's checks only
        _check_boxes_scores(boxes, scores)
        iou_threshold = _check_number("iou_threshold", iou_threshold)
        clockwise = _check_bool("clockwise", clockwise)
    return torch.ops.roiops.nms_rotated(_oriented(boxes, clockwise), scores, iou_threshold)


@torch.fx.wrap
def batched_nms_rotated(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    idxs: torch.Tensor,
    iou_threshold: float,
    clockwise: bool = True,
) -> torch.Tensor:
    """nms_rotated within each category independently, in one native call (Detectron2's
    ``batched_nms_rotated``; exact for any coordinates, no offset trick).

    Args:
        boxes: Tensor[N, 5] rotated boxes, float dtype.
        scores: Tensor[N], same dtype and device.
        idxs: Tensor[N] integer category of each box.
        iou_threshold: as in nms_rotated.
        clockwise: MMCV's flag (see the module docstring).

    Returns:
        Tensor[K] int64 indices kept, by decreasing score over all categories (ties: lower index
        first; NaN scores last).

    Raises:
        TypeError / ValueError naming the argument, as nms_rotated, and for idxs that is not an
        integer Tensor[N] on boxes' device.
    """
    if not torch.jit.is_scripting():  # TorchScript runs the native op's checks only
        _check_boxes_scores(boxes, scores)
        check_tensor("idxs", idxs, ndim=1)
        if idxs.dtype.is_floating_point or idxs.dtype.is_complex or idxs.dtype == torch.bool:
            raise TypeError(f"idxs must be an integer tensor, got {idxs.dtype}")
        if idxs.size(0) != boxes.size(0):
            raise ValueError(
                f"idxs must have one entry per box: boxes {tuple(boxes.shape)}, idxs {tuple(idxs.shape)}"
            )
        if idxs.device != boxes.device:
            raise ValueError(f"idxs must be on boxes' device {boxes.device}, got {idxs.device}")
        iou_threshold = _check_number("iou_threshold", iou_threshold)
        clockwise = _check_bool("clockwise", clockwise)
    return torch.ops.roiops.batched_nms_rotated(
        _oriented(boxes, clockwise), scores, idxs.to(torch.int64), iou_threshold
    )
