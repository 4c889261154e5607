"""roiops' ops as standard ONNX operators, for torch's two ONNX exporters.

A graph that calls roiops exports to a plain ONNX file (no custom domain), which any ONNX runtime
runs as it is:

    import roiops.onnx
    torch.onnx.export(model, args, "model.onnx", dynamo=True, opset_version=18,
                      custom_translation_table=roiops.onnx.translation_table())
    # TorchScript-based exporter (torch.onnx.export(..., dynamo=False)), while torch ships it:
    roiops.onnx.register_torchscript_symbolics()

Importing roiops does not import this module (nor onnxscript); it is loaded when asked for.

Translations (opset >= 16; the file is written at ``OPSET``):

- ``roi_align`` -> ``RoiAlign`` (mode avg): ``coordinate_transformation_mode`` half_pixel for
  aligned=True, output_half_pixel for aligned=False (which keeps the 1-pixel minimum box size);
  sampling_ratio <= 0 (adaptive, ceil(box / output_size)) -> ``sampling_ratio=0``.
- ``roi_pool`` -> ``MaxRoiPool``. Its second output (the argmax, which only the backward reads)
  has no ONNX equivalent and is exported as -1 everywhere.
- ``multi_scale_roi_align`` (the FPN pooler) -> FPN eq. 1 level assignment with elementwise ops,
  then per level ``NonZero`` + ``Gather`` + ``RoiAlign`` + ``ScatterND`` into the output.
- ``nms`` -> ``NonMaxSuppression`` (one class; suppression at IoU strictly above the threshold, as
  here). ``batched_nms`` -> one ``NonMaxSuppression`` over a [classes, N] score matrix in which a
  box scores -inf outside its own category (exact: no coordinate offset trick), then two stable
  ``TopK`` sorts that restore roiops' order (decreasing score, ties by lower index).
- ``box_iou``, ``box_encode``, ``box_decode`` -> elementwise ops (same formulas and empty-box rules).
- ``paste_masks`` -> separable bilinear resize written as two batched ``MatMul`` with per-box
  interpolation matrices [N, H, M + 2] and [N, M + 2, W], zero outside each box's extent: the same
  sample positions and weights as the native kernel (float rounding differs, ~1e-7).
- ``rpn_proposals`` -> per image and level ``Slice`` + ``TopK`` (the pre_nms_top_n largest
  logits), ``Sigmoid``, the decoding above with clipping, ``NonZero`` + ``Gather`` for the size and
  score tests, ``batched_nms`` above with the level as category, then the first post_nms_top_n.
- ``detections_from_box_head`` -> ``Softmax``, ``NonZero`` over the foreground probabilities above
  the threshold (proposal-major, as the native op), ``GatherElements`` of the pairs' codes, the
  decoding, the size test, ``batched_nms`` above with the class as category, the first
  detections_per_img. Both return one list per output, any number of images, and the same
  data-dependent counts (0 included) as the eager op.
- ``winograd_conv3x3`` -> ``Conv`` (3x3, padding 1) with the untransformed weight, then ``Relu``
  when asked: the runtime picks its own convolution algorithm.
- ``soft_nms`` has no ONNX equivalent: exporting it raises.

Known differences to the native ops, all at degenerate inputs: ONNX NonMaxSuppression orders
flipped boxes (x2 < x1) instead of treating them as empty, and NaN scores have no defined rank;
the FPN level's log2 is computed as log(x) / log(2) in float64 (equal to log2 rounded to float32
except, at worst, within one float32 ulp of a level boundary).

The two fused post-processing ops equal the eager op up to the runtime's rounding of exp, sigmoid
and softmax (a few float32 ulps: boxes within 7.6e-6 px, scores 2.4e-7 measured), with the
same boxes in the same order, except where the result hinges on exact equalities:
a score within an ulp of the score threshold or of another score, an IoU within an ulp of the NMS
threshold; equal RPN logits, which ``TopK`` takes and orders by lower position while the native
op follows torch.topk (whose order of equal values is its own: it can select another of them at
the pre_nms_top_n cut, and rank equal scores differently); equal scores among 1001 or more
candidates, which the native op orders as torch.sort does (torchvision's rule there) and the
translation by lower position (below 1001 both use lower position first: exact); NaN logits,
which torch.topk ranks first and ONNX ``TopK`` leaves to the runtime (a NaN never becomes a
proposal in either). Only the dynamo exporter translates them (``register_torchscript_symbolics``
does not cover them).

Adding an op: write ``_<op>_onnx`` with the op's schema arguments (trace-only onnxscript: Python
control flow over the attributes is fine) and add it to ``_TRANSLATIONS``; an op returning
several Tensor[] returns one ``_ValueList`` per list. An op without a
standard equivalent needs a decomposition into standard ops here, or fails to export.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
from onnxscript import opset18 as op

__all__ = ["OPSET", "translation_table", "register_torchscript_symbolics", "export"]

# The opset the translations are written for (RoiAlign's coordinate_transformation_mode needs 16).
OPSET = 18

_INT64 = 7
_FLOAT = 1
_BOOL = 9


def _i64(values) -> object:
    return op.Constant(value_ints=[int(v) for v in values])


def _dim(x, axis: int):
    """Size of one axis of x as an int64 Tensor[1]."""
    return op.Shape(x, start=axis, end=axis + 1)


def _int_1d(v):
    """A SymInt argument (a Python int when static, an int64 scalar value when dynamic) as Tensor[1]."""
    if isinstance(v, (int, np.integer)):
        return _i64([v])
    return op.Reshape(op.Cast(v, to=_INT64), _i64([1]))


def _like(value: float, x):
    return op.CastLike(op.Constant(value_float=float(value)), x)


def _column(t, i: int):
    """Column i of a 2-D tensor, Tensor[N]."""
    return op.Gather(t, op.Constant(value_int=i), axis=1)


# ---- RoI pooling ---------------------------------------------------------------------------------


def _roi_align_onnx(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    batch_indices = op.Cast(_column(rois, 0), to=_INT64)
    boxes = op.Slice(rois, _i64([1]), _i64([5]), _i64([1]))
    return op.RoiAlign(
        input,
        boxes,
        batch_indices,
        coordinate_transformation_mode="half_pixel" if aligned else "output_half_pixel",
        mode="avg",
        output_height=int(pooled_height),
        output_width=int(pooled_width),
        sampling_ratio=max(int(sampling_ratio), 0),
        spatial_scale=float(spatial_scale),
    )


def _roi_pool_onnx(input, rois, spatial_scale, pooled_height, pooled_width):
    out = op.MaxRoiPool(
        input, rois, pooled_shape=[int(pooled_height), int(pooled_width)], spatial_scale=float(spatial_scale)
    )
    argmax = op.Expand(op.Constant(value_int=-1), op.Shape(out))
    return out, argmax


def _fpn_level_range(spatial_scales) -> tuple[int, int]:
    # fpn_level.h, fpn_level_range: -log2 of the float32 scale, truncated.
    return (
        int(-math.log2(float(np.float32(spatial_scales[0])))),
        int(-math.log2(float(np.float32(spatial_scales[-1])))),
    )


def _multi_scale_roi_align_onnx(
    features,
    rois,
    spatial_scales,
    pooled_height,
    pooled_width,
    sampling_ratio,
    aligned,
    canonical_scale,
    canonical_level,
):
    features = list(features)
    k_min, k_max = _fpn_level_range(spatial_scales)
    # FPN eq. 1 in the boxes' dtype with fpn_level.h's operation order; log2 via float64 ln.
    area = op.Mul(op.Sub(_column(rois, 3), _column(rois, 1)), op.Sub(_column(rois, 4), _column(rois, 2)))
    s = op.Sqrt(area)
    ratio = op.Cast(op.Div(s, _like(canonical_scale, s)), to=11)
    lg = op.CastLike(op.Div(op.Log(ratio), op.Constant(value=_f64(math.log(2.0)))), s)
    k = op.Floor(op.Add(op.Add(_like(canonical_level, s), lg), _like(1e-6, s)))
    k_lo, k_hi = _like(k_min, s), _like(k_max, s)
    level = op.Where(op.Greater(k, k_lo), k, k_lo)  # NaN -> finest
    level = op.Where(op.GreaterOrEqual(level, k_hi), k_hi, level)
    level = op.Where(op.Greater(area, _like(0.0, area)), level, k_lo)  # empty or NaN area -> finest
    index = op.Sub(op.Cast(level, to=_INT64), op.Constant(value_int=k_min))
    index = op.Min(index, op.Constant(value_int=len(features) - 1))

    shape = op.Concat(_dim(rois, 0), _dim(features[0], 1), _i64([pooled_height, pooled_width]), axis=0)
    out = op.Expand(_like(0.0, features[0]), shape)
    for level_id, (f, scale) in enumerate(zip(features, spatial_scales)):
        where = op.NonZero(op.Equal(index, op.Constant(value_int=level_id)))  # [1, n]
        level_rois = op.Gather(rois, op.Reshape(where, _i64([-1])), axis=0)
        pooled = _roi_align_onnx(f, level_rois, scale, pooled_height, pooled_width, sampling_ratio, aligned)
        out = op.ScatterND(out, op.Transpose(where, perm=[1, 0]), pooled)
    return out


def _f64(value: float):
    from onnxscript import ir

    return ir.tensor(np.array(value, dtype=np.float64))


# ---- suppression ---------------------------------------------------------------------------------


def _nms_onnx(boxes, scores, iou_threshold):
    boxes = op.Cast(boxes, to=_FLOAT)  # NonMaxSuppression takes float32 only
    scores = op.Cast(scores, to=_FLOAT)
    selected = op.NonMaxSuppression(
        op.Unsqueeze(boxes, _i64([0])),
        op.Unsqueeze(scores, _i64([0, 1])),
        _dim(boxes, 0),
        op.Constant(value_floats=[float(iou_threshold)]),
        center_point_box=0,
    )
    return op.Reshape(op.Slice(selected, _i64([2]), _i64([3]), _i64([1])), _i64([-1]))


def _sort_by_score(indices, scores):
    """indices reordered by decreasing scores[indices], ties by lower index (TopK is stable)."""
    count = _dim(indices, 0)
    _, ascending = op.TopK(indices, count, largest=0, sorted=1)
    indices = op.Gather(indices, ascending, axis=0)
    _, by_score = op.TopK(op.Gather(scores, indices, axis=0), count, largest=1, sorted=1)
    return op.Gather(indices, by_score, axis=0)


def _batched_nms_onnx(boxes, scores, idxs, iou_threshold):
    boxes = op.Cast(boxes, to=_FLOAT)
    scores = op.Cast(scores, to=_FLOAT)
    # Categories lo..hi (padded so that an empty input gives one category and no overflow).
    lo = op.ReduceMin(op.Concat(idxs, _i64([2**62]), axis=0), keepdims=1)
    hi = op.ReduceMax(op.Concat(idxs, lo, axis=0), keepdims=1)
    count = op.Squeeze(op.Add(op.Sub(hi, lo), _i64([1])), _i64([0]))
    categories = op.Add(op.Range(op.Constant(value_int=0), count, op.Constant(value_int=1)), lo)
    own = op.Equal(op.Unsqueeze(idxs, _i64([0])), op.Unsqueeze(categories, _i64([1])))  # [C, N]
    minus_inf = op.Constant(value_float=-math.inf)
    class_scores = op.Where(own, op.Unsqueeze(scores, _i64([0])), minus_inf)
    selected = op.NonMaxSuppression(
        op.Unsqueeze(boxes, _i64([0])),
        op.Unsqueeze(class_scores, _i64([0])),
        _dim(boxes, 0),
        op.Constant(value_floats=[float(iou_threshold)]),
        op.Constant(value_floats=[-math.inf]),  # a box is a candidate only in its own category
        center_point_box=0,
    )
    kept = op.Reshape(op.Slice(selected, _i64([2]), _i64([3]), _i64([1])), _i64([-1]))
    return _sort_by_score(kept, scores)


def _soft_nms_onnx(boxes, scores, iou_threshold, sigma, score_threshold, method):
    raise NotImplementedError(
        "roiops.soft_nms has no standard ONNX equivalent (its score decay is sequential); run it "
        "after the exported graph"
    )


# ---- box ops -----------------------------------------------------------------------------------


def _box_area(x1, y1, x2, y2):
    w, h = op.Sub(x2, x1), op.Sub(y2, y1)
    zero = _like(0.0, w)
    positive = op.And(op.Greater(w, zero), op.Greater(h, zero))
    return op.Where(positive, op.Mul(w, h), zero)


def _box_iou_onnx(boxes1, boxes2):
    a = [op.Unsqueeze(_column(boxes1, i), _i64([1])) for i in range(4)]  # [N, 1]
    b = [op.Unsqueeze(_column(boxes2, i), _i64([0])) for i in range(4)]  # [1, M]
    area_a, area_b = _box_area(*a), _box_area(*b)
    iw = op.Sub(op.Min(a[2], b[2]), op.Max(a[0], b[0]))
    ih = op.Sub(op.Min(a[3], b[3]), op.Max(a[1], b[1]))
    zero = _like(0.0, iw)
    inter = op.Where(op.And(op.Greater(iw, zero), op.Greater(ih, zero)), op.Mul(iw, ih), zero)
    union = op.Sub(op.Add(area_a, area_b), inter)
    both = op.And(op.Greater(area_a, zero), op.Greater(area_b, zero))
    return op.Where(both, op.Div(inter, union), zero)


def _box_encode_onnx(reference_boxes, proposals, weights):
    def halves(b):
        lo = op.Slice(b, _i64([0]), _i64([2]), _i64([1]))
        size = op.Sub(op.Slice(b, _i64([2]), _i64([4]), _i64([1])), lo)
        return size, op.Add(lo, op.Mul(_like(0.5, size), size))

    ex_size, ex_ctr = halves(proposals)
    gt_size, gt_ctr = halves(reference_boxes)
    w_xy = op.CastLike(op.Constant(value_floats=[float(w) for w in weights[:2]]), ex_size)
    w_wh = op.CastLike(op.Constant(value_floats=[float(w) for w in weights[2:]]), ex_size)
    d_xy = op.Div(op.Mul(op.Sub(gt_ctr, ex_ctr), w_xy), ex_size)
    d_wh = op.Mul(op.Log(op.Div(gt_size, ex_size)), w_wh)
    return op.Concat(d_xy, d_wh, axis=1)


def _box_decode_onnx(rel_codes, boxes, weights, bbox_xform_clip, image_size=None):
    # Every coordinate a [N, C] column group of the codes (a strided Slice, no Reshape: the
    # exporter's optimiser writes a Reshape's batch axis as 0 (copy) with an inferred axis, which
    # onnxruntime rejects for zero boxes).
    boxes = op.CastLike(boxes, rel_codes)
    d = [op.Slice(rel_codes, _i64([j]), _i64([2**62]), _i64([1]), _i64([4])) for j in range(4)]
    lo = [op.Unsqueeze(_column(boxes, j), _i64([1])) for j in range(2)]  # [N, 1]
    hi = [op.Unsqueeze(_column(boxes, j), _i64([1])) for j in range(2, 4)]
    clip = _like(bbox_xform_clip, rel_codes)
    low, high = [], []
    for axis in range(2):  # x, then y
        size = op.Sub(hi[axis], lo[axis])
        ctr = op.Add(lo[axis], op.Mul(_like(0.5, size), size))
        pred_ctr = op.Add(op.Mul(op.Div(d[axis], _like(weights[axis], size)), size), ctr)
        log_size = op.Div(d[axis + 2], _like(weights[axis + 2], size))
        log_size = op.Where(op.Greater(log_size, clip), clip, log_size)  # NaN stays NaN
        half = op.Mul(op.Mul(op.Exp(log_size), size), _like(0.5, size))
        low.append(op.Sub(pred_ctr, half))
        high.append(op.Add(pred_ctr, half))
    corners = low + high  # x1, y1, x2, y2, each [N, C]
    if image_size is not None:
        height, width = (op.CastLike(_int_1d(v), rel_codes) for v in image_size)
        zero = _like(0.0, rel_codes)
        for j, bound in enumerate((width, height, width, height)):
            c = op.Where(op.Greater(corners[j], bound), bound, corners[j])
            corners[j] = op.Where(op.Less(c, zero), zero, c)
    # [N, 4 * C] coordinate-major, then the columns gathered class-major: column j of the output
    # is corner j % 4 of class j // 4. (Not a Flatten of [N, C, 4]: the optimiser turns that into
    # a Reshape with an inferred axis too.)
    out = op.Concat(*corners, axis=1)
    classes = _dim(d[0], 1)
    column = op.Range(
        op.Constant(value_int=0), op.Squeeze(op.Mul(classes, _i64([4])), _i64([0])), op.Constant(value_int=1)
    )
    four = op.Constant(value_int=4)
    source = op.Add(op.Mul(op.Mod(column, four), op.Squeeze(classes, _i64([0]))), op.Div(column, four))
    return op.Gather(out, source, axis=1)


# ---- masks -------------------------------------------------------------------------------------


def _paste_axis(low, high, mask_size: int, image_size):
    """Interpolation matrix Tensor[N, image_size, mask_size + 2] of one axis (paste_math.h):
    row p holds the weights with which image pixel p reads the zero-padded mask; 0 outside the
    box's extent and the image."""
    padded = mask_size + 2
    scale = float(np.float32(padded / mask_size))
    half = op.Mul(op.Mul(op.Sub(high, low), _like(0.5, low)), _like(scale, low))
    centre = op.Mul(op.Add(high, low), _like(0.5, low))
    # Truncation toward zero of the grown box, as Tensor.to(int64); non-finite -> nothing pasted.
    start = op.Cast(op.Cast(op.Sub(centre, half), to=_INT64), to=_FLOAT)
    end = op.Cast(op.Cast(op.Add(centre, half), to=_INT64), to=_FLOAT)
    finite = op.Not(op.Or(op.IsNaN(op.Sub(centre, half)), op.IsInf(op.Add(op.Abs(centre), op.Abs(half)))))
    size = op.Max(op.Add(op.Sub(end, start), op.Constant(value_float=1.0)), op.Constant(value_float=1.0))
    size, start = op.Unsqueeze(size, _i64([1])), op.Unsqueeze(start, _i64([1]))  # [N, 1]
    pixel = op.Unsqueeze(
        op.Cast(
            op.Range(op.Constant(value_int=0), op.Squeeze(image_size, _i64([0])), op.Constant(value_int=1)),
            to=_FLOAT,
        ),
        _i64([0]),
    )  # [1, P]
    dst = op.Sub(pixel, start)  # [N, P]: index in the resized patch
    inside = op.And(op.GreaterOrEqual(dst, op.Constant(value_float=0.0)), op.Less(dst, size))
    inside = op.And(inside, op.Unsqueeze(finite, _i64([1])))
    ratio = op.Div(op.Constant(value_float=float(padded)), size)
    src = op.Sub(op.Mul(ratio, op.Add(dst, op.Constant(value_float=0.5))), op.Constant(value_float=0.5))
    src = op.Max(src, op.Constant(value_float=0.0))
    i0 = op.Min(op.Floor(src), op.Constant(value_float=float(padded - 1)))
    lam = op.Min(op.Max(op.Sub(src, i0), op.Constant(value_float=0.0)), op.Constant(value_float=1.0))
    i1 = op.Min(op.Add(i0, op.Constant(value_float=1.0)), op.Constant(value_float=float(padded - 1)))
    # The identity resize copies (PyTorch's rule): ratio 1 gives src = dst, lambda 0, already.
    taps = op.Reshape(
        op.Cast(
            op.Range(op.Constant(value_int=0), op.Constant(value_int=padded), op.Constant(value_int=1)),
            to=_FLOAT,
        ),
        _i64([1, 1, padded]),
    )
    w0 = op.Where(
        op.Equal(op.Unsqueeze(i0, _i64([2])), taps),
        op.Unsqueeze(op.Sub(op.Constant(value_float=1.0), lam), _i64([2])),
        op.Constant(value_float=0.0),
    )
    w1 = op.Where(
        op.Equal(op.Unsqueeze(i1, _i64([2])), taps),
        op.Unsqueeze(lam, _i64([2])),
        op.Constant(value_float=0.0),
    )
    weights = op.Add(w0, w1)
    return op.Where(op.Unsqueeze(inside, _i64([2])), weights, op.Constant(value_float=0.0))  # [N, P, S]


def _paste_masks_onnx(masks, boxes, image_height, image_width, threshold=None):
    boxes = op.Cast(boxes, to=_FLOAT)
    dtype_masks = masks
    masks = op.Cast(masks, to=_FLOAT)
    mask_h, mask_w = _static_mask_size(dtype_masks)
    padded = op.Pad(masks, _i64([0, 1, 1, 0, 1, 1]))  # [N, M_h + 2, M_w + 2]
    rows = _paste_axis(_column(boxes, 1), _column(boxes, 3), mask_h, _int_1d(image_height))  # [N, H, S_h]
    cols = _paste_axis(_column(boxes, 0), _column(boxes, 2), mask_w, _int_1d(image_width))  # [N, W, S_w]
    out = op.MatMul(op.MatMul(rows, padded), op.Transpose(cols, perm=[0, 2, 1]))  # [N, H, W]
    if threshold is not None:
        return op.Greater(out, _like(threshold, out))
    return op.CastLike(out, dtype_masks)


def _static_mask_size(masks) -> tuple[int, int]:
    shape = masks.shape
    if shape is None or not isinstance(shape[1], int) or not isinstance(shape[2], int):
        raise NotImplementedError("paste_masks exports only with a static mask size M x M")
    return int(shape[1]), int(shape[2])


# ---- detection post-processing -----------------------------------------------------------------


class _ValueList(list):
    """One Tensor[] output of an op that returns several lists (rpn_proposals: (boxes[], scores[])).

    torch's dynamo exporter maps a translation's sequence output element by element: it names each
    element and, for ``out[i][j]`` in the graph, indexes the sequence twice, naming the inner value
    after the first index too. A plain list has no name; this one takes the names it is given and
    has no producing node, so a list of lists passes through the exporter as nested getitems."""

    name: str | None = None

    def producer(self):
        return None


def _rows(x, start, end):
    """Rows [start, end) of x (Tensor[1] int64 bounds), along axis 0."""
    return op.Slice(x, start, end, _i64([0]))


def _nonzero_1d(condition):
    """Positions (int64 Tensor[M]) where the 1-D boolean condition holds, increasing."""
    return op.Reshape(op.NonZero(condition), _i64([-1]))


def _sides_at_least(boxes, min_size):
    """Tensor[K] bool: both sides of every box at least min_size (NaN fails), each side the
    difference rounded to the boxes' dtype and min_size rounded to it, as the native kernels."""
    low = _like(min_size, boxes)
    w = op.Sub(_column(boxes, 2), _column(boxes, 0))
    h = op.Sub(_column(boxes, 3), _column(boxes, 1))
    return op.And(op.GreaterOrEqual(w, low), op.GreaterOrEqual(h, low))


def _select_best(boxes, scores, category, nms_thresh, limit):
    """Positions of the candidates that survive NMS within their category, best first (decreasing
    score, equal scores by lower position), at most ``limit`` (an int)."""
    kept = _batched_nms_onnx(boxes, scores, category, nms_thresh)
    return op.Slice(kept, _i64([0]), _i64([limit]), _i64([0]))


def _rpn_proposals_onnx(
    objectness,
    deltas,
    anchors,
    num_anchors_per_level,
    image_sizes,
    weights,
    bbox_xform_clip,
    pre_nms_top_n,
    post_nms_top_n,
    nms_thresh,
    min_size,
    score_thresh,
):
    num_images = len(image_sizes) // 2
    shared_anchors = anchors.shape is None or len(anchors.shape) == 2
    # Level bounds as int64 Tensor[1] (the counts are ints, or values when the sizes are dynamic).
    starts, ends = [], []
    start = _i64([0])
    for count in num_anchors_per_level:
        starts.append(start)
        start = op.Add(start, _int_1d(count))
        ends.append(start)
    boxes_out, scores_out = _ValueList(), _ValueList()
    for i in range(num_images):
        logits = op.Gather(objectness, op.Constant(value_int=i), axis=0)  # [A]
        codes = op.Gather(deltas, op.Constant(value_int=i), axis=0)  # [A, 4]
        refs = anchors if shared_anchors else op.Gather(anchors, op.Constant(value_int=i), axis=0)
        # Per level: the pre_nms_top_n largest logits (TopK: equal logits by lower position).
        top, level = [], []
        for l, (count, lo, hi) in enumerate(zip(num_anchors_per_level, starts, ends)):
            k = op.Min(_i64([pre_nms_top_n]), _int_1d(count))
            _, idx = op.TopK(_rows(logits, lo, hi), k, axis=0, largest=1, sorted=1)
            top.append(op.Add(idx, lo))
            level.append(op.Expand(op.Constant(value_int=l), op.Shape(idx)))
        top = op.Concat(*top, axis=0)  # [K], level order
        level = op.Concat(*level, axis=0)
        scores = op.Sigmoid(op.Gather(logits, top, axis=0))
        image_size = (image_sizes[2 * i], image_sizes[2 * i + 1])
        boxes = _box_decode_onnx(
            op.Gather(codes, top, axis=0), op.Gather(refs, top, axis=0), weights, bbox_xform_clip, image_size
        )
        candidate = op.And(
            _sides_at_least(boxes, min_size), op.GreaterOrEqual(scores, _like(score_thresh, scores))
        )
        where = _nonzero_1d(candidate)
        boxes, scores = op.Gather(boxes, where, axis=0), op.Gather(scores, where, axis=0)
        best = _select_best(boxes, scores, op.Gather(level, where, axis=0), nms_thresh, post_nms_top_n)
        boxes_out.append(op.Gather(boxes, best, axis=0))
        scores_out.append(op.Gather(scores, best, axis=0))
    return boxes_out, scores_out


def _detections_from_box_head_onnx(
    class_logits,
    box_deltas,
    proposals,
    image_sizes,
    weights,
    bbox_xform_clip,
    score_thresh,
    nms_thresh,
    detections_per_img,
    min_size,
):
    probs = op.Softmax(class_logits, axis=-1)  # [K, C]
    classes = _dim(class_logits, 1)
    # (row, class) offsets that turn NonZero's (row, foreground column) into (row, class).
    foreground_offset = op.Constant(value=_i64_tensor([[0], [1]]))
    boxes_out, scores_out, labels_out = _ValueList(), _ValueList(), _ValueList()
    start = _i64([0])
    for i, rois in enumerate(proposals):
        end = op.Add(start, _dim(rois, 0))
        image_probs = op.Slice(_rows(probs, start, end), _i64([1]), classes, _i64([1]))  # [P, C - 1]
        # Candidates: (proposal, class >= 1) pairs above the threshold, proposal-major (NonZero's order).
        above = op.Greater(image_probs, _like(score_thresh, image_probs))
        pairs = op.Add(op.NonZero(above), foreground_offset)  # [2, M]
        row = op.Gather(pairs, op.Constant(value_int=0), axis=0)  # [M]
        label = op.Gather(pairs, op.Constant(value_int=1), axis=0)
        pairs = op.Transpose(pairs, perm=[1, 0])  # [M, 2]
        scores = op.GatherND(_rows(probs, start, end), pairs)
        image_size = (image_sizes[2 * i], image_sizes[2 * i + 1])
        # The pairs' codes: columns 4 * label .. 4 * label + 3 of their rows (GatherElements, not
        # a Reshape to [K, C, 4], which the optimiser can make fail on zero rows; see box_decode).
        columns = op.Add(op.Mul(op.Unsqueeze(label, _i64([1])), _i64([4])), _i64([0, 1, 2, 3]))  # [M, 4]
        codes = op.GatherElements(op.Gather(_rows(box_deltas, start, end), row, axis=0), columns, axis=1)
        boxes = _box_decode_onnx(
            codes,
            op.Gather(op.CastLike(rois, class_logits), row, axis=0),
            weights,
            bbox_xform_clip,
            image_size,
        )
        where = _nonzero_1d(_sides_at_least(boxes, min_size))
        boxes, scores, label = (op.Gather(t, where, axis=0) for t in (boxes, scores, label))
        best = _select_best(boxes, scores, label, nms_thresh, detections_per_img)
        boxes_out.append(op.Gather(boxes, best, axis=0))
        scores_out.append(op.Gather(scores, best, axis=0))
        labels_out.append(op.Gather(label, best, axis=0))
        start = end
    return boxes_out, scores_out, labels_out


# ---- convolution ---------------------------------------------------------------------------------


def _winograd_conv3x3_onnx(input, weight, weight_winograd, bias=None, relu=False):
    inputs = (input, weight) if bias is None else (input, weight, bias)
    out = op.Conv(*inputs, kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1], dilations=[1, 1], group=1)
    return op.Relu(out) if relu else out


def _i64_tensor(values):
    from onnxscript import ir

    return ir.tensor(np.array(values, dtype=np.int64))


_TRANSLATIONS = {
    "roi_align": _roi_align_onnx,
    "roi_pool": _roi_pool_onnx,
    "multi_scale_roi_align": _multi_scale_roi_align_onnx,
    "nms": _nms_onnx,
    "batched_nms": _batched_nms_onnx,
    "soft_nms": _soft_nms_onnx,
    "box_iou": _box_iou_onnx,
    "box_encode": _box_encode_onnx,
    "box_decode": _box_decode_onnx,
    "paste_masks": _paste_masks_onnx,
    "rpn_proposals": _rpn_proposals_onnx,
    "detections_from_box_head": _detections_from_box_head_onnx,
    "winograd_conv3x3": _winograd_conv3x3_onnx,
}


def translation_table() -> dict:
    """``{torch.ops.roiops.<op>.default: onnxscript function}`` for ``torch.onnx.export(...,
    dynamo=True, custom_translation_table=...)``; merge it with your own table if you have one."""
    return {getattr(torch.ops.roiops, name).default: fn for name, fn in _TRANSLATIONS.items()}


def export(model, args, path, *, dynamic_shapes=None, input_names=None, output_names=None, **kwargs):
    """``torch.onnx.export`` (dynamo) with roiops' translations at ``OPSET``: model is an nn.Module
    (traced with args) or a torch.export.ExportedProgram (args ()). Saves the file to ``path``
    (weights inside) and returns the ONNXProgram. An ExportedProgram stays usable afterwards, e.g.
    for AOTInductor (torch._inductor.aoti_compile_and_package)."""
    table = {**translation_table(), **kwargs.pop("custom_translation_table", {})}
    with _discarding_fresh_unbacked_sizes(model):
        program = torch.onnx.export(
            model,
            args,
            dynamo=True,
            opset_version=kwargs.pop("opset_version", OPSET),
            dynamic_shapes=dynamic_shapes,
            input_names=input_names,
            output_names=output_names,
            custom_translation_table=table,
            **kwargs,
        )
    program.save(str(path), external_data=False)
    return program


def _discarding_fresh_unbacked_sizes(model):
    """For an ExportedProgram: a context in which new unbacked sizes of its ShapeEnv are discarded.

    torch 2.14's ONNX exporter runs the program's graph on fake tensors (its type-promotion pass)
    without binding the data-dependent sizes this allocates (NMS counts, NonZero lengths) to any
    output. They would stay pending in the ShapeEnv the program keeps, and the next trace of the
    same program (run_decompositions, AOTInductor) fails with PendingUnbackedSymbolNotFound.
    """
    if isinstance(model, torch.export.ExportedProgram):
        for node in model.graph.nodes:
            val = node.meta.get("val")
            if node.op == "placeholder" and isinstance(val, torch.Tensor):
                fake_mode = getattr(val, "fake_mode", None)
                if fake_mode is not None and fake_mode.shape_env is not None:
                    return fake_mode.shape_env.ignore_fresh_unbacked_symbols()
    return contextlib.nullcontext()


# ---- TorchScript-based exporter ------------------------------------------------------------------


def register_torchscript_symbolics(opset: int = OPSET) -> None:
    """Registers roi_align, roi_pool and nms with
    ``torch.onnx.register_custom_op_symbolic`` for ``torch.onnx.export(..., dynamo=False)`` (same
    standard ops as the dynamo translations). Idempotent."""
    from roiops import _onnx_torchscript

    _onnx_torchscript.register(opset)
