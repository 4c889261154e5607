// Host-side argument checks shared by an op's CPU and CUDA kernels. The Python wrappers validate
// first, with messages naming the user's arguments; these guard direct torch.ops calls, with the
// same errors on both devices. Host code only (no C10_HOST_DEVICE): .cu files include it for their
// host drivers.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <array>
#include <optional>
#include <utility>
#include <vector>

namespace roiops {

// rois: [K, 5] (batch index, x1, y1, x2, y2) of `like`'s dtype and device.
inline void check_rois(const char* op, const at::Tensor& rois, const at::Tensor& like) {
  TORCH_CHECK_VALUE(rois.dim() == 2 && rois.size(1) == 5, op, ": rois must be [K, 5], got ", rois.sizes());
  TORCH_CHECK_TYPE(rois.scalar_type() == like.scalar_type(), op, ": rois dtype ", rois.scalar_type(),
                   " differs from the input's ", like.scalar_type());
  TORCH_CHECK_VALUE(rois.device() == like.device(), op, ": rois is on ", rois.device(), ", the input on ",
                    like.device());
}

inline void check_pooled_size(const char* op, int64_t pooled_height, int64_t pooled_width) {
  TORCH_CHECK_VALUE(pooled_height > 0 && pooled_width > 0, op, ": output size must be positive, got (",
                    pooled_height, ", ", pooled_width, ")");
}

inline void check_spatial_scales(const char* op, const std::vector<double>& spatial_scales) {
  for (double scale : spatial_scales) {
    TORCH_CHECK_VALUE(scale > 0, op, ": spatial_scale must be positive, got ", scale);
  }
}

// features: the pyramid levels, one spatial scale each, all [N, C, H_l, W_l] with the same N, C,
// dtype and device.
inline void check_feature_maps(const char* op, const std::vector<at::Tensor>& features,
                               const std::vector<double>& spatial_scales) {
  TORCH_CHECK_VALUE(!features.empty() && features.size() == spatial_scales.size(), op,
                    ": need one spatial scale per feature map");
  const at::Tensor& first = features[0];
  TORCH_CHECK_VALUE(first.dim() == 4, op, ": input must be [N, C, H, W], got ", first.sizes());
  for (const at::Tensor& f : features) {
    TORCH_CHECK_VALUE(f.dim() == 4 && f.size(0) == first.size(0) && f.size(1) == first.size(1), op,
                      ": every feature map must be [N, C, H_l, W_l] with the same N and C, got ", f.sizes());
    TORCH_CHECK_TYPE(f.scalar_type() == first.scalar_type(), op, ": feature maps differ in dtype");
    TORCH_CHECK_VALUE(f.device() == first.device(), op, ": feature maps are on different devices");
  }
  check_spatial_scales(op, spatial_scales);
}

// grad: the gradient of a pooled output, [K, C, PH, PW], of `like`'s dtype and device.
inline void check_pooled_grad(const char* op, const at::Tensor& grad, const at::Tensor& like, int64_t num_rois,
                              int64_t channels, int64_t pooled_height, int64_t pooled_width) {
  TORCH_CHECK_VALUE(grad.dim() == 4 && grad.size(0) == num_rois && grad.size(1) == channels &&
                        grad.size(2) == pooled_height && grad.size(3) == pooled_width,
                    op, ": grad must be [K, C, PH, PW] = [", num_rois, ", ", channels, ", ", pooled_height,
                    ", ", pooled_width, "], got ", grad.sizes());
  TORCH_CHECK_TYPE(grad.scalar_type() == like.scalar_type(), op, ": grad and input dtypes differ");
  TORCH_CHECK_VALUE(grad.device() == like.device(), op, ": grad and input are on different devices");
}

// What every RoIAlign driver that reads the maps takes: the maps with their scales, the output
// size, and rois of the maps' dtype and device.
inline void check_roi_align_args(const char* op, const std::vector<at::Tensor>& features,
                                 const std::vector<double>& spatial_scales, const at::Tensor& rois,
                                 int64_t pooled_height, int64_t pooled_width) {
  check_feature_maps(op, features, spatial_scales);
  check_pooled_size(op, pooled_height, pooled_width);
  check_rois(op, rois, features[0]);
}

// The box-gradient drivers: check_roi_align_args, and grad [K, C, PH, PW] like the maps.
inline void check_box_grad_args(const char* op, const at::Tensor& grad, const std::vector<at::Tensor>& features,
                                const std::vector<double>& spatial_scales, const at::Tensor& rois,
                                int64_t pooled_height, int64_t pooled_width) {
  check_roi_align_args(op, features, spatial_scales, rois, pooled_height, pooled_width);
  check_pooled_grad(op, grad, features[0], rois.size(0), features[0].size(1), pooled_height, pooled_width);
}

// grad_grad_rois: the gradient flowing into a box gradient, [K, 5] like rois, same dtype and device.
inline void check_grad_grad_rois(const char* op, const at::Tensor& grad_grad_rois, const at::Tensor& rois) {
  TORCH_CHECK_VALUE(grad_grad_rois.sizes() == rois.sizes(), op, ": grad_grad_rois must be [K, 5] like rois, got ",
                    grad_grad_rois.sizes());
  TORCH_CHECK_VALUE(grad_grad_rois.scalar_type() == rois.scalar_type() && grad_grad_rois.device() == rois.device(),
                    op, ": grad_grad_rois must have the dtype and device of rois");
}

// The multi-scale ops: one spatial scale per feature map (an empty list is refused where the
// levels are assigned).
inline void check_scale_per_map(const char* op, size_t maps, size_t scales) {
  TORCH_CHECK_VALUE(maps == scales, op, ": need one spatial scale per feature map, got ", maps,
                    " maps and ", scales, " scales");
}

// The FPN level assignment: at least one map, rois [K, 5], a positive canonical scale.
inline void check_fpn_level_args(const char* op, const at::Tensor& rois, const std::vector<double>& spatial_scales,
                                 double canonical_scale) {
  TORCH_CHECK_VALUE(!spatial_scales.empty(), op, ": need at least one feature map");
  TORCH_CHECK_VALUE(rois.dim() == 2 && rois.size(1) == 5, op, ": rois must be [K, 5], got ", rois.sizes());
  TORCH_CHECK_VALUE(canonical_scale > 0, op, ": canonical_scale must be positive");
}

// roi_pool: input [N, C, H, W], rois [K, 5] of its dtype, a positive output size and scale.
inline void check_roi_pool_args(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                int64_t pooled_height, int64_t pooled_width) {
  TORCH_CHECK_VALUE(input.dim() == 4, "roi_pool: input must be [N, C, H, W], got ", input.sizes());
  TORCH_CHECK_VALUE(rois.dim() == 2 && rois.size(1) == 5, "roi_pool: rois must be [K, 5], got ", rois.sizes());
  TORCH_CHECK_TYPE(rois.scalar_type() == input.scalar_type(), "roi_pool: rois and input dtypes differ");
  TORCH_CHECK_VALUE(pooled_height > 0 && pooled_width > 0, "roi_pool: output size must be positive");
  TORCH_CHECK_VALUE(spatial_scale > 0, "roi_pool: spatial_scale must be positive, got ", spatial_scale);
}

// roi_pool_backward: rois [K, 5]; grad and argmax (int64) both [K, C, PH, PW].
inline void check_roi_pool_backward_args(const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& argmax,
                                         int64_t channels) {
  const int64_t num_rois = rois.size(0);
  TORCH_CHECK_VALUE(rois.dim() == 2 && rois.size(1) == 5, "roi_pool_backward: rois must be [K, 5]");
  TORCH_CHECK_VALUE(grad.dim() == 4 && grad.size(0) == num_rois && grad.size(1) == channels &&
                        argmax.sizes() == grad.sizes(),
                    "roi_pool_backward: grad and argmax must both be [K, C, PH, PW], got ", grad.sizes(), " and ",
                    argmax.sizes());
  TORCH_CHECK_TYPE(argmax.scalar_type() == at::kLong, "roi_pool_backward: argmax must be int64");
}

// paste_masks: masks [N, M, M], boxes [N, 4], both floating, a non-negative image size.
inline void check_paste_masks(const at::Tensor& masks, const at::Tensor& boxes, int64_t image_height,
                              int64_t image_width) {
  TORCH_CHECK(masks.dim() == 3, "paste_masks: masks must be [N, M, M], got ", masks.sizes());
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 4 && boxes.size(0) == masks.size(0),
              "paste_masks: boxes must be [N, 4] for masks [N, M, M], got ", boxes.sizes());
  TORCH_CHECK(at::isFloatingType(masks.scalar_type()) && at::isFloatingType(boxes.scalar_type()),
              "paste_masks: masks and boxes must be floating dtypes");
  TORCH_CHECK(image_height >= 0 && image_width >= 0, "paste_masks: image size must be >= 0");
  TORCH_CHECK(masks.size(0) == 0 || (masks.size(1) > 0 && masks.size(2) > 0),
              "paste_masks: masks must not be empty, got ", masks.sizes());
  TORCH_CHECK(boxes.device() == masks.device(), "paste_masks: masks and boxes must be on the same device");
}

// box_encode: reference_boxes and proposals [N, 4] of one dtype and device, four weights
// (wx, wy, ww, wh), returned as an array.
inline std::array<double, 4> check_box_encode_args(const at::Tensor& reference_boxes, const at::Tensor& proposals,
                                                   at::ArrayRef<double> weights) {
  TORCH_CHECK_VALUE(reference_boxes.dim() == 2 && reference_boxes.size(1) == 4,
                    "box_encode: reference_boxes must be [N, 4], got ", reference_boxes.sizes());
  TORCH_CHECK_VALUE(proposals.sizes() == reference_boxes.sizes(), "box_encode: proposals must be [N, 4] like ",
                    "reference_boxes, got ", proposals.sizes());
  TORCH_CHECK_TYPE(proposals.scalar_type() == reference_boxes.scalar_type(),
                   "box_encode: reference_boxes and proposals dtypes differ");
  TORCH_CHECK_VALUE(proposals.device() == reference_boxes.device(),
                    "box_encode: reference_boxes and proposals are on different devices");
  TORCH_CHECK_VALUE(weights.size() == 4, "box_encode: weights must be (wx, wy, ww, wh), got ", weights.size(),
                    " values");
  return {weights[0], weights[1], weights[2], weights[3]};
}

// box_decode: rel_codes [N, 4 * C] and boxes [N, 4] of one dtype and device, four weights
// (returned as an array), image_size absent or (height, width).
inline std::array<double, 4> check_box_decode_args(const at::Tensor& rel_codes, const at::Tensor& boxes,
                                                   at::ArrayRef<double> weights,
                                                   at::OptionalIntArrayRef image_size) {
  TORCH_CHECK_VALUE(boxes.dim() == 2 && boxes.size(1) == 4, "box_decode: boxes must be [N, 4], got ",
                    boxes.sizes());
  TORCH_CHECK_VALUE(rel_codes.dim() == 2 && rel_codes.size(0) == boxes.size(0) && rel_codes.size(1) % 4 == 0,
                    "box_decode: rel_codes must be [N, 4 * C] for boxes [N, 4], got ", rel_codes.sizes());
  TORCH_CHECK_TYPE(rel_codes.scalar_type() == boxes.scalar_type(), "box_decode: rel_codes and boxes dtypes differ");
  TORCH_CHECK_VALUE(rel_codes.device() == boxes.device(), "box_decode: rel_codes and boxes are on different devices");
  TORCH_CHECK_VALUE(!image_size.has_value() || image_size->size() == 2,
                    "box_decode: image_size must be (height, width)");
  TORCH_CHECK_VALUE(weights.size() == 4, "box_decode: weights must be (wx, wy, ww, wh), got ", weights.size(),
                    " values");
  return {weights[0], weights[1], weights[2], weights[3]};
}

// ---- detection post-processing (rpn_proposals, detections_from_box_head) ----------------------

// image_sizes: (height, width) per image, flattened: 2 * num_images non-negative values.
inline void check_image_sizes(const char* op, at::IntArrayRef image_sizes, int64_t num_images) {
  TORCH_CHECK_VALUE(static_cast<int64_t>(image_sizes.size()) == 2 * num_images, op,
                    ": image_sizes must hold (height, width) for each of the ", num_images, " images, got ",
                    image_sizes.size(), " values");
  for (int64_t v : image_sizes) {
    TORCH_CHECK_VALUE(v >= 0, op, ": image_sizes must be >= 0, got ", v);
  }
}

// rpn_proposals: objectness [N, A], deltas [N, A, 4], anchors [A, 4] or [N, A, 4], one floating
// dtype and device; the level sizes add up to A; four weights; non-negative top-n counts.
inline std::array<double, 4> check_rpn_proposals_args(const at::Tensor& objectness, const at::Tensor& deltas,
                                                      const at::Tensor& anchors,
                                                      at::IntArrayRef num_anchors_per_level,
                                                      at::IntArrayRef image_sizes, at::ArrayRef<double> weights,
                                                      int64_t pre_nms_top_n, int64_t post_nms_top_n) {
  const char* op = "rpn_proposals";
  TORCH_CHECK_VALUE(objectness.dim() == 2, op, ": objectness must be [N, A], got ", objectness.sizes());
  const int64_t n = objectness.size(0), a = objectness.size(1);
  TORCH_CHECK_VALUE(deltas.dim() == 3 && deltas.size(0) == n && deltas.size(1) == a && deltas.size(2) == 4, op,
                    ": deltas must be [N, A, 4] for objectness [N, A] = ", objectness.sizes(), ", got ",
                    deltas.sizes());
  TORCH_CHECK_VALUE((anchors.dim() == 2 && anchors.size(0) == a && anchors.size(1) == 4) ||
                        (anchors.dim() == 3 && anchors.size(0) == n && anchors.size(1) == a && anchors.size(2) == 4),
                    op, ": anchors must be [A, 4] or [N, A, 4] for objectness [N, A] = ", objectness.sizes(),
                    ", got ", anchors.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(objectness.scalar_type()), op, ": objectness must be a floating dtype");
  TORCH_CHECK_TYPE(deltas.scalar_type() == objectness.scalar_type() && anchors.scalar_type() == objectness.scalar_type(),
                   op, ": objectness, deltas and anchors dtypes differ");
  TORCH_CHECK_VALUE(deltas.device() == objectness.device() && anchors.device() == objectness.device(), op,
                    ": objectness, deltas and anchors are on different devices");
  int64_t total = 0;
  for (int64_t v : num_anchors_per_level) {
    TORCH_CHECK_VALUE(v >= 0, op, ": num_anchors_per_level must be >= 0, got ", v);
    total += v;
  }
  TORCH_CHECK_VALUE(total == a, op, ": num_anchors_per_level must add up to the ", a, " anchors, got ", total);
  check_image_sizes(op, image_sizes, n);
  TORCH_CHECK_VALUE(weights.size() == 4, op, ": weights must be (wx, wy, ww, wh), got ", weights.size(), " values");
  TORCH_CHECK_VALUE(pre_nms_top_n >= 0 && post_nms_top_n >= 0, op, ": pre_nms_top_n and post_nms_top_n must be >= 0");
  return {weights[0], weights[1], weights[2], weights[3]};
}

// detections_from_box_head: class_logits [K, C], box_deltas [K, 4 * C], proposals one [P_i, 4] per
// image adding up to K, one floating dtype and device; four weights; detections_per_img >= 0.
inline std::array<double, 4> check_box_head_args(const at::Tensor& class_logits, const at::Tensor& box_deltas,
                                                 at::TensorList proposals, at::IntArrayRef image_sizes,
                                                 at::ArrayRef<double> weights, int64_t detections_per_img) {
  const char* op = "detections_from_box_head";
  TORCH_CHECK_VALUE(class_logits.dim() == 2 && class_logits.size(1) >= 1, op,
                    ": class_logits must be [K, C] with C >= 1, got ", class_logits.sizes());
  const int64_t k = class_logits.size(0), c = class_logits.size(1);
  TORCH_CHECK_VALUE(box_deltas.dim() == 2 && box_deltas.size(0) == k && box_deltas.size(1) == 4 * c, op,
                    ": box_deltas must be [K, 4 * C] for class_logits [K, C] = ", class_logits.sizes(), ", got ",
                    box_deltas.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(class_logits.scalar_type()), op, ": class_logits must be a floating dtype");
  TORCH_CHECK_TYPE(box_deltas.scalar_type() == class_logits.scalar_type(), op,
                   ": class_logits and box_deltas dtypes differ");
  TORCH_CHECK_VALUE(box_deltas.device() == class_logits.device(), op,
                    ": class_logits and box_deltas are on different devices");
  int64_t total = 0;
  for (const at::Tensor& p : proposals) {
    TORCH_CHECK_VALUE(p.dim() == 2 && p.size(1) == 4, op, ": proposals must be [P_i, 4] per image, got ", p.sizes());
    TORCH_CHECK_TYPE(p.scalar_type() == class_logits.scalar_type(), op,
                     ": proposals and class_logits dtypes differ");
    TORCH_CHECK_VALUE(p.device() == class_logits.device(), op, ": proposals and class_logits are on different devices");
    total += p.size(0);
  }
  TORCH_CHECK_VALUE(total == k, op, ": proposals must add up to the ", k, " rows of class_logits, got ", total);
  check_image_sizes(op, image_sizes, static_cast<int64_t>(proposals.size()));
  TORCH_CHECK_VALUE(weights.size() == 4, op, ": weights must be (wx, wy, ww, wh), got ", weights.size(), " values");
  TORCH_CHECK_VALUE(detections_per_img >= 0, op, ": detections_per_img must be >= 0, got ", detections_per_img);
  return {weights[0], weights[1], weights[2], weights[3]};
}

// ---- position-sensitive RoI pooling (ps_roi_align, ps_roi_pool) ----------------------------------

// input [N, C, H, W] with C a multiple of pooled_height * pooled_width, rois [K, 5] of its dtype and
// device, a positive output size and scale. Returns C_out = C / (pooled_height * pooled_width).
inline int64_t check_ps_roi_args(const char* op, const at::Tensor& input, const at::Tensor& rois,
                                 double spatial_scale, int64_t pooled_height, int64_t pooled_width) {
  TORCH_CHECK_VALUE(input.dim() == 4, op, ": input must be [N, C, H, W], got ", input.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(input.scalar_type()), op, ": input must be a floating dtype, got ",
                   input.scalar_type());
  check_rois(op, rois, input);
  check_pooled_size(op, pooled_height, pooled_width);
  TORCH_CHECK_VALUE(spatial_scale > 0, op, ": spatial_scale must be positive, got ", spatial_scale);
  const int64_t bins = pooled_height * pooled_width;
  TORCH_CHECK_VALUE(input.size(1) % bins == 0, op, ": input channels (", input.size(1),
                    ") must be a multiple of output_size height * width (", pooled_height, " * ", pooled_width,
                    " = ", bins, ")");
  return input.size(1) / bins;
}

// The backward ops: grad [K, C / (PH * PW), PH, PW] like rois (dtype, device), the input size
// non-negative with channels a multiple of PH * PW. Returns C_out.
inline int64_t check_ps_roi_backward_args(const char* op, const at::Tensor& grad, const at::Tensor& rois,
                                          double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                                          int64_t batch_size, int64_t channels, int64_t height, int64_t width) {
  check_pooled_size(op, pooled_height, pooled_width);
  TORCH_CHECK_TYPE(at::isFloatingType(grad.scalar_type()), op, ": grad must be a floating dtype, got ",
                   grad.scalar_type());
  check_rois(op, rois, grad);
  TORCH_CHECK_VALUE(spatial_scale > 0, op, ": spatial_scale must be positive, got ", spatial_scale);
  TORCH_CHECK_VALUE(batch_size >= 0 && channels >= 0 && height >= 0 && width >= 0, op,
                    ": negative input size");
  const int64_t bins = pooled_height * pooled_width;
  TORCH_CHECK_VALUE(channels % bins == 0, op, ": channels (", channels,
                    ") must be a multiple of pooled_height * pooled_width (", bins, ")");
  check_pooled_grad(op, grad, rois, rois.size(0), channels / bins, pooled_height, pooled_width);
  return channels / bins;
}

// winograd_conv3x3: input [N, C, H, W], weight [K, C, 3, 3], weight_winograd [36, C, K] (its
// F(4x4, 3x3) transform), bias [K] or none, all of the input's dtype and device.
inline void check_winograd_conv3x3_args(const at::Tensor& input, const at::Tensor& weight,
                                        const at::Tensor& weight_winograd, const std::optional<at::Tensor>& bias) {
  constexpr const char* op = "winograd_conv3x3";
  TORCH_CHECK_VALUE(input.dim() == 4, op, ": input must be [N, C, H, W], got ", input.sizes());
  TORCH_CHECK_VALUE(weight.dim() == 4 && weight.size(1) == input.size(1) && weight.size(2) == 3 &&
                        weight.size(3) == 3,
                    op, ": weight must be [K, ", input.size(1), ", 3, 3] for input ", input.sizes(), ", got ",
                    weight.sizes());
  TORCH_CHECK_VALUE(weight_winograd.dim() == 3 && weight_winograd.size(0) == 36 &&
                        weight_winograd.size(1) == input.size(1) && weight_winograd.size(2) == weight.size(0),
                    op, ": weight_winograd must be [36, ", input.size(1), ", ", weight.size(0), "], got ",
                    weight_winograd.sizes());
  std::vector<std::pair<const char*, const at::Tensor*>> others = {{"weight", &weight},
                                                                   {"weight_winograd", &weight_winograd}};
  if (bias.has_value()) {
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == weight.size(0), op, ": bias must be [",
                      weight.size(0), "], got ", bias->sizes());
    others.emplace_back("bias", &*bias);
  }
  for (const auto& [name, t] : others) {
    TORCH_CHECK_TYPE(t->scalar_type() == input.scalar_type(), op, ": ", name, " dtype ", t->scalar_type(),
                     " differs from the input's ", input.scalar_type());
    TORCH_CHECK_VALUE(t->device() == input.device(), op, ": ", name, " is on ", t->device(), ", the input on ",
                      input.device());
  }
}

}  // namespace roiops
