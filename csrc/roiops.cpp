// Every roiops operator schema, in one reviewable place. Kernels live in cpu/<op>.cpp and
// cuda/<op>.cu and register themselves with TORCH_LIBRARY_IMPL; fake (meta) kernels and autograd
// are registered from Python (roiops/_meta.py, roiops/_autograd.py).
//
// The module itself is empty: importing roiops._C only loads this library so that the static
// registrations below and in the kernel files run.

#include <Python.h>
#include <torch/library.h>

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",  // name
      "roiops native kernels; use the roiops package, not this module",
      -1,    // no per-module state
      nullptr,
  };
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(roiops, m) {
  // ---- box ops -------------------------------------------------------------------------------
  // boxes1: [N, 4], boxes2: [M, 4], (x1, y1, x2, y2) -> IoU [N, M].
  m.def("box_iou(Tensor boxes1, Tensor boxes2) -> Tensor");
  // The rest of the pairwise IoU family, same shapes: kind 1 generalized, 2 distance, 3 complete
  // IoU (common/box_geometry.h, box_iou_family_pair); eps regularizes distance and complete.
  m.def("box_iou_family(Tensor boxes1, Tensor boxes2, int kind, float eps) -> Tensor");

  // ---- box coding (roiops/box_coder.py) --------------------------------------------------------
  // R-CNN regression codes, weights = (wx, wy, ww, wh). reference_boxes, proposals: [N, 4] of one
  // dtype -> (dx, dy, dw, dh) [N, 4].
  m.def("box_encode(Tensor reference_boxes, Tensor proposals, float[] weights) -> Tensor");
  // rel_codes: [N, 4 * C] (C classes per box), boxes: [N, 4] of the same dtype -> decoded boxes
  // [N, 4 * C], each clamped to [0, width] x [0, height] when image_size = (height, width) is given.
  m.def(
      "box_decode(Tensor rel_codes, Tensor boxes, float[] weights, float bbox_xform_clip, "
      "SymInt[]? image_size=None) -> Tensor");

  // ---- RoI pooling -----------------------------------------------------------------------------
  // input: [N, C, H, W] (NCHW or channels_last); rois: [K, 5] (batch index, x1, y1, x2, y2) in
  // input-image pixels, scaled by spatial_scale onto the map -> [K, C, pooled_height, pooled_width].
  m.def(
      "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor");
  // output [K, C, PH, PW] and the flat (h * W + w) argmax of each bin, -1 for an empty bin.
  m.def(
      "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width) -> (Tensor, Tensor)");
  // FPN pooler: assigns each RoI to a level (FPN eq. 1) and pools it there, in one call.
  m.def(
      "multi_scale_roi_align(Tensor[] features, Tensor rois, float[] spatial_scales, "
      "SymInt pooled_height, SymInt pooled_width, int sampling_ratio, bool aligned, "
      "float canonical_scale, int canonical_level) -> Tensor");
  // Backward ops (autograd in roiops/_autograd.py). grad: [K, C, PH, PW]; the gradient of the
  // input is [batch_size, channels, height, width], channels_last in memory when channels_last.
  m.def(
      "roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, "
      "int sampling_ratio, bool aligned, bool channels_last) -> Tensor");
  // Gradient with respect to the box coordinates: [K, 5], column 0 (batch index) is 0.
  m.def(
      "roi_align_backward_rois(Tensor grad, Tensor input, Tensor rois, float spatial_scale, "
      "SymInt pooled_height, SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor");
  // argmax from roi_pool; the gradient goes to the argmax of each bin.
  m.def(
      "roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, SymInt batch_size, SymInt channels, "
      "SymInt height, SymInt width, bool channels_last) -> Tensor");
  // One gradient per feature map, heights[l] x widths[l].
  m.def(
      "multi_scale_roi_align_backward(Tensor grad, Tensor rois, float[] spatial_scales, "
      "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt[] heights, "
      "SymInt[] widths, int sampling_ratio, bool aligned, float canonical_scale, int canonical_level, "
      "bool channels_last) -> Tensor[]");
  // Gradient with respect to the image-space box coordinates: [K, 5], column 0 is 0.
  m.def(
      "multi_scale_roi_align_backward_rois(Tensor grad, Tensor[] features, Tensor rois, "
      "float[] spatial_scales, SymInt pooled_height, SymInt pooled_width, int sampling_ratio, "
      "bool aligned, float canonical_scale, int canonical_level) -> Tensor");
  // Second derivatives through the box gradient, for roi_align (one map; canonical_* unused) and
  // multi_scale_roi_align alike: with S = <grad_grad_rois, backward_rois(grad, features, rois)>,
  // returns (dS/d grad [K, C, PH, PW], dS/d features (one per map; none unless features_grad),
  // dS/d rois [K, 5]).
  m.def(
      "roi_align_backward_rois_backward(Tensor grad, Tensor[] features, Tensor rois, Tensor grad_grad_rois, "
      "float[] spatial_scales, SymInt pooled_height, SymInt pooled_width, int sampling_ratio, bool aligned, "
      "float canonical_scale, int canonical_level, bool features_grad) -> (Tensor, Tensor[], Tensor)");

  // ---- position-sensitive RoI pooling (R-FCN) --------------------------------------------------
  // input: [N, C, H, W] with C = C_out * pooled_height * pooled_width; rois: [K, 5] as above ->
  // [K, C_out, pooled_height, pooled_width]; element (k, c, ph, pw) pools input channel
  // (c * pooled_height + ph) * pooled_width + pw over bin (ph, pw). torchvision's ops also return
  // that index as a `channel_mapping` tensor; it depends on the position alone, so these ops
  // neither return nor take it (the backward recomputes it), and roiops.ps_roi_* return the output.
  // ps_roi_align samples as roi_align with aligned=true; ps_roi_pool averages a quantized bin.
  m.def(
      "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, int sampling_ratio) -> Tensor");
  m.def(
      "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width) -> Tensor");
  // grad: [K, C_out, PH, PW] -> the gradient of the input, [batch_size, channels, height, width],
  // channels_last in memory when channels_last.
  m.def(
      "ps_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, int sampling_ratio, SymInt batch_size, SymInt channels, SymInt height, "
      "SymInt width, bool channels_last) -> Tensor");
  m.def(
      "ps_roi_pool_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, "
      "bool channels_last) -> Tensor");

  // ---- suppression -----------------------------------------------------------------------------
  // Kept indices (int64) in decreasing score order.
  m.def("nms(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor");
  m.def("batched_nms(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold) -> Tensor");
  // method: 0 = linear, 1 = gaussian. Returns (kept indices, their decayed scores).
  m.def(
      "soft_nms(Tensor boxes, Tensor scores, float iou_threshold, float sigma, "
      "float score_threshold, int method) -> (Tensor, Tensor)");

  // ---- masks -----------------------------------------------------------------------------------
  // masks: [N, M, M] probabilities, boxes: [N, 4] image pixels -> [N, image_height, image_width],
  // bool when threshold is given, else masks' float dtype.
  m.def(
      "paste_masks(Tensor masks, Tensor boxes, SymInt image_height, SymInt image_width, "
      "float? threshold) -> Tensor");

  // ---- detection post-processing (roiops/postprocess.py) ---------------------------------------
  // The RPN's proposals, every level of every image in one call: objectness [N, A] logits, deltas
  // [N, A, 4] codes, anchors [A, 4] (shared) or [N, A, 4], the levels' anchor counts (adding up to
  // A, level-major as the flattened head outputs), image_sizes (h_0, w_0, h_1, w_1, ...). Per image:
  // per-level top-k logits, decoded, clipped, small boxes and low sigmoid scores dropped, NMS per
  // level, the post_nms_top_n best -> (boxes [P_i, 4] per image, scores [P_i] per image).
  m.def(
      "rpn_proposals(Tensor objectness, Tensor deltas, Tensor anchors, SymInt[] num_anchors_per_level, "
      "SymInt[] image_sizes, float[] weights, float bbox_xform_clip, int pre_nms_top_n, int post_nms_top_n, "
      "float nms_thresh, float min_size, float score_thresh) -> (Tensor[], Tensor[])");
  // The box head's detections: class_logits [K, C], box_deltas [K, 4 * C], proposals one [P_i, 4]
  // per image (adding up to K), image_sizes (h_0, w_0, ...). Per image: softmax, foreground pairs
  // above score_thresh, decoded, clipped, small boxes dropped, NMS per class, the
  // detections_per_img best -> (boxes [D_i, 4], scores [D_i], labels [D_i] int64), one per image.
  m.def(
      "detections_from_box_head(Tensor class_logits, Tensor box_deltas, Tensor[] proposals, "
      "SymInt[] image_sizes, float[] weights, float bbox_xform_clip, float score_thresh, float nms_thresh, "
      "int detections_per_img, float min_size) -> (Tensor[], Tensor[], Tensor[])");

  // ---- convolution (roiops/winograd.py) ---------------------------------------------------------
  // A 3x3 convolution, stride 1, padding 1: input [N, C, H, W], weight [K, C, 3, 3],
  // weight_winograd [36, C, K] (weight's F(4x4, 3x3) transform, roiops.winograd_weight), bias [K]
  // -> [N, K, H, W] channels_last, ReLU applied when relu. The CPU kernel computes it by Winograd's
  // algorithm from weight_winograd; CUDA calls cuDNN's convolution with weight. Inference only.
  m.def("winograd_conv3x3(Tensor input, Tensor weight, Tensor weight_winograd, Tensor? bias, bool relu) -> Tensor");

  // ---- rotated boxes (roiops/rotated.py, roiops/roi_align_rotated.py) ---------------------------
  // A rotated box is (x_ctr, y_ctr, width, height, angle), angle in degrees, counter-clockwise on
  // screen (Detectron2's convention; common/rotated_box_geometry.h).
  // boxes1: [N, 5], boxes2: [M, 5] -> IoU [N, M]; aligned: N == M -> [N], IoU of matching rows.
  m.def("box_iou_rotated(Tensor boxes1, Tensor boxes2, bool aligned) -> Tensor");
  // Kept indices (int64) in decreasing score order, the rules of nms / batched_nms.
  m.def("nms_rotated(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor");
  m.def("batched_nms_rotated(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold) -> Tensor");
  // input: [N, C, H, W] (NCHW or channels_last); rois: [K, 6] (batch index, x_ctr, y_ctr, width,
  // height, angle) in input-image pixels -> [K, C, pooled_height, pooled_width].
  m.def(
      "roi_align_rotated(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor");
  // grad: [K, C, PH, PW] -> gradient of the input [batch_size, channels, height, width],
  // channels_last in memory when channels_last.
  m.def(
      "roi_align_rotated_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, "
      "int sampling_ratio, bool aligned, bool channels_last) -> Tensor");
}
