"""Non-maximum suppression: greedy (nms), per category (batched_nms) and soft (soft_nms).

Conventions shared by all three:

- Boxes are Tensor[N, 4] (x1, y1, x2, y2) in pixels; overlap is box_iou's IoU, so an empty box
  (x2 <= x1 or y2 <= y1) or one with a NaN or infinite coordinate has IoU 0 with every box: it is
  never suppressed and suppresses nothing.
- Rank is decreasing score; equal scores rank the lower index first; NaN scores rank after every
  number (torchvision ranks them first).
- A box is suppressed when its IoU with a kept box of higher rank is strictly greater than
  iou_threshold (as torchvision). iou_threshold < 0 therefore keeps only the top-ranked box, and
  iou_threshold >= 1 keeps every box.
"""

import math

import torch

from roiops._validation import TypeRuntimeError, ValueRuntimeError, check_float, check_same, check_tensor


def _check_boxes_scores(boxes, scores) -> None:
    check_tensor("boxes", boxes, ndim=2, last_dim=4)
    check_tensor("scores", scores, ndim=1)
    check_float("boxes", boxes)
    check_float("scores", scores)
    check_same("boxes", boxes, "scores", scores, autocast=True)
    if scores.size(0) != boxes.size(0):
        raise ValueRuntimeError(f"scores must have one entry per box: boxes {tuple(boxes.shape)}, scores "
                         f"{tuple(scores.shape)}")


def _check_number(name: str, value, *, allow_inf: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeRuntimeError(f"{name} must be a number, got {type(value).__name__}")
    if math.isnan(value) or (not allow_inf and math.isinf(value)):
        raise ValueError(f"{name} must be a {'finite ' if not allow_inf else ''}number, got {value}")
    return float(value)


# nms, batched_nms and soft_nms are FX leaves (torch.fx.wrap): symbolic tracing records the call
# instead of tracing into the argument checks.
@torch.fx.wrap
def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression (drop-in for torchvision.ops.nms).

    Visits boxes by rank and keeps each one that no already-kept box overlaps with IoU >
    iou_threshold. Only kept boxes near a candidate are compared with it (a spatial grid), so
    clustered inputs cost roughly linear time instead of quadratic.

    Args:
        boxes: Tensor[N, 4] (x1, y1, x2, y2), float32 / float64 / float16 / bfloat16 (the half
            types are compared in float32).
        scores: Tensor[N], same dtype and device (under autocast, any float dtype).
        iou_threshold: suppress boxes overlapping a kept one with IoU strictly above this.

    Returns:
        Tensor[K] int64 indices of the kept boxes, by decreasing score (ties: lower index first;
        NaN scores last). The kept set equals torchvision's whenever scores are distinct and not
        NaN.

    Raises:
        TypeError / ValueError naming the argument for a non-tensor, a wrong shape, a non-float
        dtype, a dtype / device mismatch, or a NaN threshold.

    Under torch.autocast (CPU, CUDA) boxes and scores may differ in dtype: both are cast up to
    float32 (float64 if either is) and the kept indices are those of that call.
    """
    if not torch.jit.is_scripting():  # TorchScript runs the native op's checks only
        _check_boxes_scores(boxes, scores)
        iou_threshold = _check_number("iou_threshold", iou_threshold)
    return torch.ops.roiops.nms(boxes, scores, iou_threshold)


@torch.fx.wrap
def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
    """Greedy NMS within each category independently, in one native call.

    Boxes of different categories never suppress each other. Unlike the coordinate-offset trick
    this is exact for any coordinates, and unlike a Python loop over categories it is one call
    (categories run in parallel on the CPU).

    Args:
        boxes: Tensor[N, 4] (x1, y1, x2, y2), float dtype.
        scores: Tensor[N], same dtype and device.
        idxs: Tensor[N] integer category of each box (any integer values).
        iou_threshold: as in nms.

    Returns:
        Tensor[K] int64 indices kept, by decreasing score over all categories (ties: lower index
        first; NaN scores last), as torchvision.ops.batched_nms orders them.

    Raises:
        TypeError / ValueError naming the argument, as nms, and for idxs that is not an integer
        Tensor[N].

    Under torch.autocast (CPU, CUDA) as nms: boxes and scores cast up to float32 (float64 if
    either is).

    No boxes at all may also come as an empty 1-d Tensor[0] (as torchvision accepts): the result
    is an empty int64 Tensor[0].
    """
    if isinstance(boxes, torch.Tensor) and boxes.dim() == 1 and boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    if not torch.jit.is_scripting():  # TorchScript runs the native op's checks only
        iou_threshold = _check_batched_nms_args(boxes, scores, idxs, iou_threshold)
    return torch.ops.roiops.batched_nms(boxes, scores, idxs.to(torch.int64), iou_threshold)


def _check_batched_nms_args(boxes, scores, idxs, iou_threshold) -> float:
    _check_boxes_scores(boxes, scores)
    check_tensor("idxs", idxs, ndim=1)
    if idxs.dtype.is_floating_point or idxs.dtype.is_complex or idxs.dtype == torch.bool:
        raise TypeError(f"idxs must be an integer tensor, got {idxs.dtype}")
    if idxs.size(0) != boxes.size(0):
        raise ValueRuntimeError(f"idxs must have one entry per box: boxes {tuple(boxes.shape)}, "
                         f"idxs {tuple(idxs.shape)}")
    if idxs.device != boxes.device:
        raise ValueRuntimeError(f"idxs must be on boxes' device {boxes.device}, got {idxs.device}")
    return _check_number("iou_threshold", iou_threshold)


SOFT_NMS_METHODS = {"linear": 0, "gaussian": 1}


@torch.fx.wrap
def soft_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float = 0.3, sigma: float = 0.5,
             score_threshold: float = 0.001, method: str = "linear") -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-NMS (Bodla et al. 2017): decays the scores of overlapping boxes instead of removing them.

    Repeatedly selects the remaining box M with the highest score (ties: lower index) and, for
    every other remaining box b with IoU o = IoU(M, b), multiplies b's score by

        linear:   1 - o if o > iou_threshold, else 1      (paper eq. 2)
        gaussian: exp(-o^2 / sigma)                      (paper eq. 3; iou_threshold unused)

    Boxes whose (decayed) score falls below score_threshold are dropped; a NaN score is dropped.

    Args:
        boxes: Tensor[N, 4] (x1, y1, x2, y2), float dtype.
        scores: Tensor[N], same dtype and device.
        iou_threshold: overlap above which the linear method decays a score.
        sigma: width of the gaussian penalty, > 0.
        score_threshold: minimum score a box needs to stay (and to be returned).
        method: "linear" or "gaussian".

    Returns:
        (Tensor[K] int64 indices in selection order, Tensor[K] their decayed scores at selection,
        scores' dtype). The decayed scores are non-increasing.

    Raises:
        TypeError / ValueError naming the argument for bad tensors, a NaN number, sigma <= 0 or
        an unknown method.

    Under torch.autocast (CPU, CUDA) boxes and scores may differ in dtype: the decay runs in
    float32 (float64 if either is) and the decayed scores come back in scores' dtype.
    """
    if not torch.jit.is_scripting():  # TorchScript runs the native op's checks only
        iou_threshold, sigma, score_threshold = _check_soft_nms_args(
            boxes, scores, iou_threshold, sigma, score_threshold, method
        )
    # SOFT_NMS_METHODS' codes, written out: TorchScript cannot read a module-level dict.
    return torch.ops.roiops.soft_nms(boxes, scores, iou_threshold, sigma, score_threshold,
                                     0 if method == "linear" else 1)


def _check_soft_nms_args(boxes, scores, iou_threshold, sigma, score_threshold, method):
    _check_boxes_scores(boxes, scores)
    iou_threshold = _check_number("iou_threshold", iou_threshold)
    sigma = _check_number("sigma", sigma)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    score_threshold = _check_number("score_threshold", score_threshold)
    if method not in SOFT_NMS_METHODS:
        raise ValueError(f"method must be one of {tuple(SOFT_NMS_METHODS)}, got {method!r}")
    return iou_threshold, sigma, score_threshold
