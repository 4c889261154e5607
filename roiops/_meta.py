"""Fake (meta) kernels: output shapes and dtypes of every roiops op, for torch.compile and torch.export.

Each one checks what the native kernel would check with torch._check, so a traced program fails at
trace time with the same message as at run time.
"""

import torch


@torch.library.register_fake("roiops::box_iou")
def _box_iou_fake(boxes1, boxes2):
    torch._check(boxes1.dim() == 2 and boxes1.size(1) == 4, lambda: "box_iou: boxes1 must be [N, 4]")
    torch._check(boxes2.dim() == 2 and boxes2.size(1) == 4, lambda: "box_iou: boxes2 must be [M, 4]")
    torch._check(boxes1.dtype == boxes2.dtype, lambda: "box_iou: boxes1 and boxes2 dtypes differ")
    return boxes1.new_empty((boxes1.size(0), boxes2.size(0)))


@torch.library.register_fake("roiops::box_iou_family")
def _box_iou_family_fake(boxes1, boxes2, kind, eps):
    torch._check(boxes1.dim() == 2 and boxes1.size(1) == 4, lambda: "box_iou_family: boxes1 must be [N, 4]")
    torch._check(boxes2.dim() == 2 and boxes2.size(1) == 4, lambda: "box_iou_family: boxes2 must be [M, 4]")
    torch._check(boxes1.dtype == boxes2.dtype, lambda: "box_iou_family: boxes1 and boxes2 dtypes differ")
    torch._check(1 <= kind <= 3, lambda: f"box_iou_family: kind must be 1, 2 or 3, got {kind}")
    return boxes1.new_empty((boxes1.size(0), boxes2.size(0)))


@torch.library.register_fake("roiops::box_encode")
def _box_encode_fake(reference_boxes, proposals, weights):
    torch._check(reference_boxes.dim() == 2 and reference_boxes.size(1) == 4,
                 lambda: "box_encode: reference_boxes must be [N, 4]")
    torch._check(proposals.shape == reference_boxes.shape,
                 lambda: "box_encode: proposals must be [N, 4] like reference_boxes")
    torch._check(proposals.dtype == reference_boxes.dtype,
                 lambda: "box_encode: reference_boxes and proposals dtypes differ")
    torch._check(len(weights) == 4, lambda: "box_encode: weights must be (wx, wy, ww, wh)")
    return reference_boxes.new_empty(reference_boxes.shape)


@torch.library.register_fake("roiops::box_decode")
def _box_decode_fake(rel_codes, boxes, weights, bbox_xform_clip, image_size=None):
    torch._check(boxes.dim() == 2 and boxes.size(1) == 4, lambda: "box_decode: boxes must be [N, 4]")
    torch._check(rel_codes.dim() == 2 and rel_codes.size(0) == boxes.size(0) and rel_codes.size(1) % 4 == 0,
                 lambda: "box_decode: rel_codes must be [N, 4 * C] for boxes [N, 4]")
    torch._check(rel_codes.dtype == boxes.dtype, lambda: "box_decode: rel_codes and boxes dtypes differ")
    torch._check(len(weights) == 4, lambda: "box_decode: weights must be (wx, wy, ww, wh)")
    torch._check(image_size is None or len(image_size) == 2,
                 lambda: "box_decode: image_size must be (height, width)")
    return rel_codes.new_empty(rel_codes.shape)


# ---- RoI pooling (roi_align, roi_pool, multi_scale_roi_align) ---------------------------------


def _uses_channels_last(input) -> bool:
    # The kernels' rule (csrc/common/memory_format.h, use_channels_last): channels_last in memory
    # and not also plain contiguous.
    return (
        input.dim() == 4
        and not input.is_contiguous()
        and input.is_contiguous(memory_format=torch.channels_last)
    )


def _pooled_like(input, shape, channels_last: bool, dtype=None):
    out = input.new_empty(shape, dtype=dtype)
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


def _check_rois_fake(op, input, rois):
    torch._check(input.dim() == 4, lambda: f"{op}: input must be [N, C, H, W]")
    torch._check(rois.dim() == 2 and rois.size(1) == 5, lambda: f"{op}: rois must be [K, 5]")
    torch._check(rois.dtype == input.dtype, lambda: f"{op}: rois and input dtypes differ")


@torch.library.register_fake("roiops::roi_align")
def _roi_align_fake(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    _check_rois_fake("roi_align", input, rois)
    shape = (rois.size(0), input.size(1), pooled_height, pooled_width)
    return _pooled_like(input, shape, _uses_channels_last(input))


@torch.library.register_fake("roiops::roi_align_backward")
def _roi_align_backward_fake(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels,
                             height, width, sampling_ratio, aligned, channels_last):
    torch._check(grad.dim() == 4, lambda: "roi_align_backward: grad must be [K, C, PH, PW]")
    return _pooled_like(grad, (batch_size, channels, height, width), channels_last)


@torch.library.register_fake("roiops::roi_align_backward_rois")
def _roi_align_backward_rois_fake(
    grad, input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned
):
    _check_rois_fake("roi_align_backward_rois", input, rois)
    return rois.new_empty((rois.size(0), 5))


@torch.library.register_fake("roiops::roi_pool")
def _roi_pool_fake(input, rois, spatial_scale, pooled_height, pooled_width):
    _check_rois_fake("roi_pool", input, rois)
    shape = (rois.size(0), input.size(1), pooled_height, pooled_width)
    cl = _uses_channels_last(input)
    return _pooled_like(input, shape, cl), _pooled_like(input, shape, cl, dtype=torch.int64)


@torch.library.register_fake("roiops::roi_pool_backward")
def _roi_pool_backward_fake(grad, rois, argmax, batch_size, channels, height, width, channels_last):
    torch._check(grad.dim() == 4, lambda: "roi_pool_backward: grad must be [K, C, PH, PW]")
    return _pooled_like(grad, (batch_size, channels, height, width), channels_last)


@torch.library.register_fake("roiops::multi_scale_roi_align")
def _multi_scale_roi_align_fake(features, rois, spatial_scales, pooled_height, pooled_width, sampling_ratio,
                                aligned, canonical_scale, canonical_level):
    torch._check(len(features) == len(spatial_scales), lambda: "multi_scale_roi_align: one scale per map")
    _check_rois_fake("multi_scale_roi_align", features[0], rois)
    shape = (rois.size(0), features[0].size(1), pooled_height, pooled_width)
    return _pooled_like(features[0], shape, _uses_channels_last(features[0]))


@torch.library.register_fake("roiops::multi_scale_roi_align_backward")
def _multi_scale_roi_align_backward_fake(grad, rois, spatial_scales, pooled_height, pooled_width, batch_size,
                                         channels, heights, widths, sampling_ratio, aligned, canonical_scale,
                                         canonical_level, channels_last):
    return [_pooled_like(grad, (batch_size, channels, h, w), channels_last) for h, w in zip(heights, widths)]


@torch.library.register_fake("roiops::multi_scale_roi_align_backward_rois")
def _multi_scale_roi_align_backward_rois_fake(
    grad, features, rois, spatial_scales, pooled_height, pooled_width, sampling_ratio, aligned,
    canonical_scale, canonical_level,
):
    return rois.new_empty((rois.size(0), 5))


@torch.library.register_fake("roiops::roi_align_backward_rois_backward")
def _roi_align_backward_rois_backward_fake(
    grad, features, rois, grad_grad_rois, spatial_scales, pooled_height, pooled_width, sampling_ratio,
    aligned, canonical_scale, canonical_level, features_grad,
):
    _check_rois_fake("roi_align_backward_rois_backward", features[0], rois)
    torch._check(grad_grad_rois.shape == rois.shape,
                 lambda: "roi_align_backward_rois_backward: grad_grad_rois must be [K, 5] like rois")
    d_features = [_pooled_like(f, f.shape, _uses_channels_last(f)) for f in features] if features_grad else []
    return torch.empty_like(grad), d_features, rois.new_empty((rois.size(0), 5))


# ---- position-sensitive RoI pooling (ps_roi_align, ps_roi_pool) -------------------------------


def _ps_roi_fake(op, input, rois, pooled_height, pooled_width):
    _check_rois_fake(op, input, rois)
    bins = pooled_height * pooled_width
    torch._check(input.size(1) % bins == 0,
                 lambda: f"{op}: input channels must be a multiple of output_size height * width")
    shape = (rois.size(0), input.size(1) // bins, pooled_height, pooled_width)
    return _pooled_like(input, shape, _uses_channels_last(input))


@torch.library.register_fake("roiops::ps_roi_align")
def _ps_roi_align_fake(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio):
    return _ps_roi_fake("ps_roi_align", input, rois, pooled_height, pooled_width)


@torch.library.register_fake("roiops::ps_roi_pool")
def _ps_roi_pool_fake(input, rois, spatial_scale, pooled_height, pooled_width):
    return _ps_roi_fake("ps_roi_pool", input, rois, pooled_height, pooled_width)


def _ps_roi_backward_fake(op, grad, rois, pooled_height, pooled_width, batch_size, channels, height, width,
                          channels_last):
    torch._check(grad.dim() == 4, lambda: f"{op}: grad must be [K, C_out, PH, PW]")
    torch._check(rois.dim() == 2 and rois.size(1) == 5, lambda: f"{op}: rois must be [K, 5]")
    torch._check(channels % (pooled_height * pooled_width) == 0,
                 lambda: f"{op}: channels must be a multiple of pooled_height * pooled_width")
    return _pooled_like(grad, (batch_size, channels, height, width), channels_last)


@torch.library.register_fake("roiops::ps_roi_align_backward")
def _ps_roi_align_backward_fake(grad, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio,
                                batch_size, channels, height, width, channels_last):
    return _ps_roi_backward_fake("ps_roi_align_backward", grad, rois, pooled_height, pooled_width, batch_size,
                                 channels, height, width, channels_last)


@torch.library.register_fake("roiops::ps_roi_pool_backward")
def _ps_roi_pool_backward_fake(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels,
                               height, width, channels_last):
    return _ps_roi_backward_fake("ps_roi_pool_backward", grad, rois, pooled_height, pooled_width, batch_size,
                                 channels, height, width, channels_last)


# ---- suppression and masks ---------------------------------------------------------------------


def _check_nms_args(op, boxes, scores):
    torch._check(boxes.dim() == 2 and boxes.size(1) == 4, lambda: f"{op}: boxes must be [N, 4]")
    torch._check(scores.dim() == 1 and scores.size(0) == boxes.size(0),
                 lambda: f"{op}: scores must be [N] for boxes [N, 4]")
    torch._check(boxes.dtype == scores.dtype, lambda: f"{op}: boxes and scores dtypes differ")
    torch._check(boxes.dtype.is_floating_point, lambda: f"{op}: boxes must be a floating dtype")


def _num_kept():
    # How many boxes survive depends on the data: an unbacked size, at most N.
    return torch.library.get_ctx().new_dynamic_size()


@torch.library.register_fake("roiops::nms")
def _nms_fake(boxes, scores, iou_threshold):
    _check_nms_args("nms", boxes, scores)
    return boxes.new_empty((_num_kept(),), dtype=torch.int64)


@torch.library.register_fake("roiops::batched_nms")
def _batched_nms_fake(boxes, scores, idxs, iou_threshold):
    _check_nms_args("batched_nms", boxes, scores)
    torch._check(idxs.dim() == 1 and idxs.size(0) == boxes.size(0),
                 lambda: "batched_nms: idxs must be [N] for boxes [N, 4]")
    torch._check(idxs.dtype == torch.int64, lambda: "batched_nms: idxs must be int64")
    return boxes.new_empty((_num_kept(),), dtype=torch.int64)


@torch.library.register_fake("roiops::soft_nms")
def _soft_nms_fake(boxes, scores, iou_threshold, sigma, score_threshold, method):
    _check_nms_args("soft_nms", boxes, scores)
    torch._check(method in (0, 1), lambda: "soft_nms: method must be 0 (linear) or 1 (gaussian)")
    k = _num_kept()
    return boxes.new_empty((k,), dtype=torch.int64), scores.new_empty((k,))


@torch.library.register_fake("roiops::paste_masks")
def _paste_masks_fake(masks, boxes, image_height, image_width, threshold):
    torch._check(masks.dim() == 3, lambda: "paste_masks: masks must be [N, M, M]")
    torch._check(boxes.dim() == 2 and boxes.size(1) == 4 and boxes.size(0) == masks.size(0),
                 lambda: "paste_masks: boxes must be [N, 4] for masks [N, M, M]")
    torch._check(masks.dtype.is_floating_point and boxes.dtype.is_floating_point,
                 lambda: "paste_masks: masks and boxes must be floating dtypes")
    torch._check(image_height >= 0 and image_width >= 0, lambda: "paste_masks: image size must be >= 0")
    dtype = torch.bool if threshold is not None else masks.dtype
    return masks.new_empty((masks.size(0), image_height, image_width), dtype=dtype)


# ---- convolution (winograd_conv3x3) ------------------------------------------------------------


@torch.library.register_fake("roiops::winograd_conv3x3")
def _winograd_conv3x3_fake(input, weight, weight_winograd, bias, relu):
    torch._check(input.dim() == 4, lambda: "winograd_conv3x3: input must be [N, C, H, W]")
    torch._check(weight.dim() == 4 and weight.size(1) == input.size(1) and weight.shape[2:] == (3, 3),
                 lambda: "winograd_conv3x3: weight must be [K, C, 3, 3]")
    torch._check(weight_winograd.dim() == 3 and weight_winograd.size(0) == 36
                 and weight_winograd.size(1) == input.size(1) and weight_winograd.size(2) == weight.size(0),
                 lambda: "winograd_conv3x3: weight_winograd must be [36, C, K]")
    torch._check(weight.dtype == input.dtype and weight_winograd.dtype == input.dtype,
                 lambda: "winograd_conv3x3: weight dtypes differ from the input's")
    n, _, h, w = input.shape
    return input.new_empty((n, weight.size(0), h, w)).contiguous(memory_format=torch.channels_last)


# ---- detection post-processing (rpn_proposals, detections_from_box_head) ----------------------


@torch.library.register_fake("roiops::rpn_proposals")
def _rpn_proposals_fake(objectness, deltas, anchors, num_anchors_per_level, image_sizes, weights,
                        bbox_xform_clip, pre_nms_top_n, post_nms_top_n, nms_thresh, min_size, score_thresh):
    torch._check(objectness.dim() == 2, lambda: "rpn_proposals: objectness must be [N, A]")
    n, a = objectness.shape
    torch._check(deltas.dim() == 3 and deltas.size(0) == n and deltas.size(1) == a and deltas.size(2) == 4,
                 lambda: "rpn_proposals: deltas must be [N, A, 4] for objectness [N, A]")
    torch._check(anchors.shape[-2:] == (a, 4) and anchors.dim() in (2, 3),
                 lambda: "rpn_proposals: anchors must be [A, 4] or [N, A, 4]")
    torch._check(objectness.dtype.is_floating_point,
                 lambda: "rpn_proposals: objectness must be a floating dtype")
    torch._check(deltas.dtype == objectness.dtype and anchors.dtype == objectness.dtype,
                 lambda: "rpn_proposals: objectness, deltas and anchors dtypes differ")
    torch._check(len(image_sizes) == 2 * n,
                 lambda: "rpn_proposals: image_sizes must hold (height, width) per image")
    torch._check(len(weights) == 4, lambda: "rpn_proposals: weights must be (wx, wy, ww, wh)")
    boxes, scores = [], []
    for _ in range(int(n)):
        # How many proposals survive depends on the data: an unbacked size, at most post_nms_top_n.
        p = _num_kept()
        torch._check(p <= post_nms_top_n)
        boxes.append(objectness.new_empty((p, 4)))
        scores.append(objectness.new_empty((p,)))
    return boxes, scores


@torch.library.register_fake("roiops::detections_from_box_head")
def _detections_from_box_head_fake(class_logits, box_deltas, proposals, image_sizes, weights, bbox_xform_clip,
                                   score_thresh, nms_thresh, detections_per_img, min_size):
    torch._check(class_logits.dim() == 2, lambda: "detections_from_box_head: class_logits must be [K, C]")
    k, c = class_logits.shape
    torch._check(box_deltas.dim() == 2 and box_deltas.size(0) == k and box_deltas.size(1) == 4 * c,
                 lambda: "detections_from_box_head: box_deltas must be [K, 4 * C]")
    torch._check(class_logits.dtype.is_floating_point and box_deltas.dtype == class_logits.dtype,
                 lambda: "detections_from_box_head: class_logits and box_deltas dtypes differ")
    torch._check(len(image_sizes) == 2 * len(proposals),
                 lambda: "detections_from_box_head: image_sizes must hold (height, width) per image")
    torch._check(len(weights) == 4, lambda: "detections_from_box_head: weights must be (wx, wy, ww, wh)")
    boxes, scores, labels = [], [], []
    for p in proposals:
        torch._check(p.dim() == 2 and p.size(1) == 4,
                     lambda: "detections_from_box_head: proposals must be [P_i, 4]")
        d = _num_kept()
        torch._check(d <= detections_per_img)
        boxes.append(class_logits.new_empty((d, 4)))
        scores.append(class_logits.new_empty((d,)))
        labels.append(class_logits.new_empty((d,), dtype=torch.int64))
    return boxes, scores, labels


# ---- rotated boxes -----------------------------------------------------------------------------


@torch.library.register_fake("roiops::box_iou_rotated")
def _box_iou_rotated_fake(boxes1, boxes2, aligned):
    torch._check(boxes1.dim() == 2 and boxes1.size(1) == 5, lambda: "box_iou_rotated: boxes1 must be [N, 5]")
    torch._check(boxes2.dim() == 2 and boxes2.size(1) == 5, lambda: "box_iou_rotated: boxes2 must be [M, 5]")
    torch._check(boxes1.dtype == boxes2.dtype, lambda: "box_iou_rotated: boxes1 and boxes2 dtypes differ")
    if aligned:
        torch._check(boxes1.size(0) == boxes2.size(0),
                     lambda: "box_iou_rotated: aligned=True needs as many boxes2 as boxes1")
        return boxes1.new_empty((boxes1.size(0),))
    return boxes1.new_empty((boxes1.size(0), boxes2.size(0)))


def _check_nms_rotated_args(op, boxes, scores):
    torch._check(boxes.dim() == 2 and boxes.size(1) == 5, lambda: f"{op}: boxes must be [N, 5]")
    torch._check(scores.dim() == 1 and scores.size(0) == boxes.size(0),
                 lambda: f"{op}: scores must be [N] for boxes [N, 5]")
    torch._check(boxes.dtype == scores.dtype, lambda: f"{op}: boxes and scores dtypes differ")
    torch._check(boxes.dtype.is_floating_point, lambda: f"{op}: boxes must be a floating dtype")


@torch.library.register_fake("roiops::nms_rotated")
def _nms_rotated_fake(boxes, scores, iou_threshold):
    _check_nms_rotated_args("nms_rotated", boxes, scores)
    return boxes.new_empty((_num_kept(),), dtype=torch.int64)


@torch.library.register_fake("roiops::batched_nms_rotated")
def _batched_nms_rotated_fake(boxes, scores, idxs, iou_threshold):
    _check_nms_rotated_args("batched_nms_rotated", boxes, scores)
    torch._check(idxs.dim() == 1 and idxs.size(0) == boxes.size(0),
                 lambda: "batched_nms_rotated: idxs must be [N] for boxes [N, 5]")
    torch._check(idxs.dtype == torch.int64, lambda: "batched_nms_rotated: idxs must be int64")
    return boxes.new_empty((_num_kept(),), dtype=torch.int64)


@torch.library.register_fake("roiops::roi_align_rotated")
def _roi_align_rotated_fake(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    torch._check(input.dim() == 4, lambda: "roi_align_rotated: input must be [N, C, H, W]")
    torch._check(rois.dim() == 2 and rois.size(1) == 6, lambda: "roi_align_rotated: rois must be [K, 6]")
    torch._check(rois.dtype == input.dtype, lambda: "roi_align_rotated: rois and input dtypes differ")
    shape = (rois.size(0), input.size(1), pooled_height, pooled_width)
    return _pooled_like(input, shape, _uses_channels_last(input))


@torch.library.register_fake("roiops::roi_align_rotated_backward")
def _roi_align_rotated_backward_fake(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size,
                                     channels, height, width, sampling_ratio, aligned, channels_last):
    torch._check(grad.dim() == 4, lambda: "roi_align_rotated_backward: grad must be [K, C, PH, PW]")
    torch._check(rois.dim() == 2 and rois.size(1) == 6,
                 lambda: "roi_align_rotated_backward: rois must be [K, 6]")
    return _pooled_like(grad, (batch_size, channels, height, width), channels_last)
