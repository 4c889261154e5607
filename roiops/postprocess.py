"""Detection post-processing of two-stage detectors, each step chain one native call: the RPN's
proposal selection (rpn_proposals) and the box head's detections (detections_from_box_head).

Both return exactly what torchvision's ``RegionProposalNetwork`` (decode + ``filter_proposals``)
and ``RoIHeads.postprocess_detections`` return for the same inputs on the CPU: the same boxes and
scores (and labels), bit for bit, in the same order. Every value rounds as the element-wise PyTorch
formula rounds it (the sigmoid, the softmax and the exp inside the decoding are torch's own), the
per-level top-k is torch.topk (so equal logits are picked and ordered as there), and equal scores
come out in the order torchvision's batched_nms gives them: by position below 1001 candidates, by
torch.sort's (unstable) order of the kept scores from 1001 on. Two documented differences remain,
both from torchvision's batched_nms: below 1001 candidates it suppresses on coordinates offset by
category (``idx * (max + 1)``), which can move an IoU exactly at the threshold by a rounding step,
where roiops compares the boxes themselves; and on CUDA the order of equal scores is that of
roiops' batched_nms (lower position first).

Only the selected anchors (the per-level top-k) and the (proposal, class) pairs above the score
threshold are decoded: decoding is element-wise, so those boxes equal the ones decoding everything
gives, at a fraction of the work.

NaN: a NaN logit ranks above every number in the top-k (torch.topk's rule), so it can take a
top-k slot, but its score is NaN and fails the score threshold: it never becomes a proposal. A NaN
class logit makes the softmax of its row NaN: no detection from that proposal. A NaN delta gives a
NaN box, which the small-box test removes.

No gradient flows through either op (as in torchvision, the inputs are detached).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from roiops._validation import check_float, check_tensor

# The largest log-size change a decoded box may take (a box grows at most 1000 / 16 times), the
# default of torchvision's BoxCoder and of roiops.BoxCoder.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    return float(value)


def _count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, torch.SymInt)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if isinstance(value, int) and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _weights(weights) -> list[float]:
    weights = list(weights)
    if len(weights) != 4 or not all(
        isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w > 0
        for w in weights
    ):
        raise ValueError(f"weights must be 4 positive finite numbers, got {weights!r}")
    return [float(w) for w in weights]


def _flat_image_sizes(image_sizes, num_images: int) -> list:
    if not isinstance(image_sizes, (list, tuple)):
        raise TypeError(f"image_sizes must be a list of (height, width), got {type(image_sizes).__name__}")
    if len(image_sizes) != num_images:
        raise ValueError(
            f"image_sizes must have one (height, width) per image ({num_images}), got {len(image_sizes)}"
        )
    flat = []
    for size in image_sizes:
        if not isinstance(size, (list, tuple, torch.Size)) or len(size) != 2:
            raise ValueError(f"image_sizes must hold (height, width) pairs, got {size!r}")
        for v in size:
            flat.append(_count("image_sizes", v))
    return flat


def rpn_proposals(
    objectness: torch.Tensor,
    deltas: torch.Tensor,
    anchors,
    image_sizes: Sequence[tuple[int, int]],
    num_anchors_per_level: Sequence[int],
    pre_nms_top_n: int,
    post_nms_top_n: int,
    nms_thresh: float,
    min_size: float,
    score_thresh: float,
    *,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    bbox_xform_clip: float = BBOX_XFORM_CLIP,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The RPN's proposals for every image, from the flattened head outputs (one native call).

    Per image: the ``pre_nms_top_n`` largest logits of every level (torch.topk); their anchors'
    deltas decoded (R-CNN box coding, ``weights`` and ``bbox_xform_clip`` as roiops.BoxCoder) and
    clipped to the image; boxes with a side below ``min_size`` dropped; boxes with sigmoid(logit)
    below ``score_thresh`` dropped; NMS within each level at ``nms_thresh``; the
    ``post_nms_top_n`` best kept, by decreasing score. Equals torchvision's
    ``RegionProposalNetwork``: ``box_coder.decode`` then ``filter_proposals`` (module docstring).

    Args:
        objectness: Tensor[N, A] logits, A anchors per image in level order (e.g. the flattened
            RPN head output); float32, float64, float16 or bfloat16 (the half types round every step
            to their dtype, as PyTorch's element-wise ops do).
        deltas: Tensor[N, A, 4] (or Tensor[N * A, 4], torchvision's layout) codes (dx, dy, dw, dh),
            same dtype and device.
        anchors: Tensor[A, 4] shared by the images, Tensor[N, A, 4], or a list of N Tensor[A, 4]
            (torchvision's AnchorGenerator output), (x1, y1, x2, y2) in image pixels; converted to
            objectness' dtype.
        image_sizes: N (height, width) pairs; boxes are clipped to [0, width] x [0, height].
        num_anchors_per_level: anchors of each level, adding up to A (an empty level is allowed).
        pre_nms_top_n: candidates per level and image (fewer when a level has fewer anchors).
        post_nms_top_n: proposals per image at most.
        nms_thresh: IoU above which a proposal suppresses a lower-scoring one of its level.
        min_size: minimum width and height (pixels) of a proposal.
        score_thresh: minimum sigmoid(logit) of a proposal (compared with >=).
        weights: (wx, wy, ww, wh) of the box coding; (1, 1, 1, 1) for the RPN.
        bbox_xform_clip: upper clamp of dw / ww and dh / wh before exp.

    Returns:
        (boxes, scores): two lists with one entry per image, Tensor[P_i, 4] and Tensor[P_i]
        (probabilities) in objectness' dtype, by decreasing score.

    Raises:
        TypeError / ValueError naming the argument for a non-tensor, a wrong shape, dtype or
        device, level counts that do not add up to A, a negative count or a NaN threshold.
    """
    check_tensor("objectness", objectness, ndim=2)
    check_float("objectness", objectness)
    n, a = objectness.shape
    check_tensor("deltas", deltas)
    if deltas.dim() == 2 and deltas.shape == (n * a, 4):
        deltas = deltas.view(n, a, 4)
    if deltas.shape != (n, a, 4):
        raise ValueError(
            f"deltas must be [N, A, 4] or [N * A, 4] for objectness [N, A] = {tuple(objectness.shape)}, "
            f"got {tuple(deltas.shape)}"
        )
    if deltas.dtype != objectness.dtype:
        raise TypeError(
            f"deltas and objectness must have the same dtype, got {deltas.dtype} and {objectness.dtype}"
        )
    if isinstance(anchors, (list, tuple)):
        if len(anchors) != n:
            raise ValueError(f"anchors must have one Tensor[A, 4] per image ({n}), got {len(anchors)}")
        for t in anchors:
            check_tensor("anchors", t, ndim=2, last_dim=4)
        anchors = anchors[0] if all(t is anchors[0] for t in anchors) else torch.stack(list(anchors))
    check_tensor("anchors", anchors)
    if anchors.shape not in ((a, 4), (n, a, 4)):
        raise ValueError(
            f"anchors must be [A, 4] or [N, A, 4] for objectness [N, A] = {tuple(objectness.shape)}, "
            f"got {tuple(anchors.shape)}"
        )
    for name, t in (("deltas", deltas), ("anchors", anchors)):
        if t.device != objectness.device:
            raise ValueError(f"{name} must be on objectness' device {objectness.device}, got {t.device}")
    if not isinstance(num_anchors_per_level, (list, tuple)):
        raise TypeError(
            f"num_anchors_per_level must be a list of ints, got {type(num_anchors_per_level).__name__}"
        )
    levels = [_count("num_anchors_per_level", v) for v in num_anchors_per_level]
    if all(isinstance(v, int) for v in levels) and isinstance(a, int) and sum(levels) != a:
        raise ValueError(f"num_anchors_per_level must add up to the {a} anchors, got {sum(levels)}")
    sizes = _flat_image_sizes(image_sizes, n)
    pre_nms_top_n = _count("pre_nms_top_n", pre_nms_top_n)
    post_nms_top_n = _count("post_nms_top_n", post_nms_top_n)
    boxes, scores = torch.ops.roiops.rpn_proposals(
        objectness.detach(),
        deltas.detach(),
        anchors.detach().to(objectness.dtype),
        levels,
        sizes,
        _weights(weights),
        _number("bbox_xform_clip", bbox_xform_clip),
        pre_nms_top_n,
        post_nms_top_n,
        _number("nms_thresh", nms_thresh),
        _number("min_size", min_size),
        _number("score_thresh", score_thresh),
    )
    return list(boxes), list(scores)


def detections_from_box_head(
    class_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    proposals: Sequence[torch.Tensor],
    image_sizes: Sequence[tuple[int, int]],
    score_thresh: float,
    nms_thresh: float,
    detections_per_img: int,
    *,
    weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
    bbox_xform_clip: float = BBOX_XFORM_CLIP,
    min_size: float = 1e-2,
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """The box head's detections for every image (one native call).

    Per image: softmax over the classes; every (proposal, class != 0) pair with probability above
    ``score_thresh`` becomes a candidate with its class's decoded box (``weights``,
    ``bbox_xform_clip``) clipped to the image; candidates with a side below ``min_size`` dropped;
    NMS within each class at ``nms_thresh``; the ``detections_per_img`` best kept, by decreasing
    score. Equals torchvision's ``RoIHeads.postprocess_detections`` (which uses min_size 1e-2;
    module docstring).

    Args:
        class_logits: Tensor[K, C] logits, class 0 the background; float32, float64, float16 or
            bfloat16 (the half types round every step to their dtype).
        box_deltas: Tensor[K, 4 * C] codes, class-major within a row; same dtype and device.
        proposals: one Tensor[P_i, 4] per image (x1, y1, x2, y2 pixels), adding up to K rows;
            converted to class_logits' dtype.
        image_sizes: one (height, width) per image; boxes are clipped to [0, width] x [0, height].
        score_thresh: minimum probability of a detection (compared with >).
        nms_thresh: IoU above which a detection suppresses a lower-scoring one of its class.
        detections_per_img: detections per image at most.
        weights: (wx, wy, ww, wh) of the box coding; (10, 10, 5, 5) for the box head.
        bbox_xform_clip: upper clamp of dw / ww and dh / wh before exp.
        min_size: minimum width and height (pixels) of a detection.

    Returns:
        (boxes, scores, labels): three lists with one entry per image, Tensor[D_i, 4],
        Tensor[D_i] (probabilities, class_logits' dtype) and Tensor[D_i] int64 in [1, C), by
        decreasing score.

    Raises:
        TypeError / ValueError naming the argument for a non-tensor, a wrong shape, dtype or
        device, proposals that do not add up to K, a negative count or a NaN threshold.
    """
    check_tensor("class_logits", class_logits, ndim=2)
    check_float("class_logits", class_logits)
    k, c = class_logits.shape
    if isinstance(c, int) and c < 1:
        raise ValueError(f"class_logits must have at least one class, got shape {tuple(class_logits.shape)}")
    check_tensor("box_deltas", box_deltas, ndim=2)
    if box_deltas.shape != (k, 4 * c):
        raise ValueError(
            f"box_deltas must be [K, 4 * C] for class_logits [K, C] = {tuple(class_logits.shape)}, got "
            f"{tuple(box_deltas.shape)}"
        )
    if box_deltas.dtype != class_logits.dtype:
        raise TypeError(
            f"box_deltas and class_logits must have the same dtype, got {box_deltas.dtype} and "
            f"{class_logits.dtype}"
        )
    if box_deltas.device != class_logits.device:
        raise ValueError(
            f"box_deltas must be on class_logits' device {class_logits.device}, got {box_deltas.device}"
        )
    if isinstance(proposals, torch.Tensor) or not isinstance(proposals, (list, tuple)):
        raise TypeError(f"proposals must be a list of Tensor[P_i, 4], got {type(proposals).__name__}")
    for p in proposals:
        check_tensor("proposals", p, ndim=2, last_dim=4)
        if p.device != class_logits.device:
            raise ValueError(
                f"proposals must be on class_logits' device {class_logits.device}, got {p.device}"
            )
    rows = sum(p.shape[0] for p in proposals)
    if isinstance(rows, int) and isinstance(k, int) and rows != k:
        raise ValueError(f"proposals must add up to the {k} rows of class_logits, got {rows}")
    sizes = _flat_image_sizes(image_sizes, len(proposals))
    detections_per_img = _count("detections_per_img", detections_per_img)
    boxes, scores, labels = torch.ops.roiops.detections_from_box_head(
        class_logits.detach(),
        box_deltas.detach(),
        [p.detach().to(class_logits.dtype) for p in proposals],
        sizes,
        _weights(weights),
        _number("bbox_xform_clip", bbox_xform_clip),
        _number("score_thresh", score_thresh),
        _number("nms_thresh", nms_thresh),
        detections_per_img,
        _number("min_size", min_size),
    )
    return list(boxes), list(scores), list(labels)
