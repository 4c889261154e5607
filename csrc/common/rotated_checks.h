// Host-side argument checks of the rotated-box ops, shared by their CPU and CUDA drivers (as
// common/checks.h is for the others). The Python wrappers validate first, with messages naming the
// user's arguments; these guard direct torch.ops calls, with the same errors on both devices.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "common/checks.h"

namespace roiops {

// box_iou_rotated: boxes1 [N, 5], boxes2 [M, 5] of one floating dtype and device; aligned needs N == M.
inline void check_box_iou_rotated_args(const at::Tensor& boxes1, const at::Tensor& boxes2, bool aligned) {
  TORCH_CHECK_VALUE(boxes1.dim() == 2 && boxes1.size(1) == 5, "box_iou_rotated: boxes1 must be [N, 5], got ",
                    boxes1.sizes());
  TORCH_CHECK_VALUE(boxes2.dim() == 2 && boxes2.size(1) == 5, "box_iou_rotated: boxes2 must be [M, 5], got ",
                    boxes2.sizes());
  TORCH_CHECK_TYPE(boxes1.scalar_type() == boxes2.scalar_type(), "box_iou_rotated: boxes1 and boxes2 dtypes differ");
  TORCH_CHECK_TYPE(at::isFloatingType(boxes1.scalar_type()), "box_iou_rotated: boxes must be a floating dtype");
  TORCH_CHECK_VALUE(boxes1.device() == boxes2.device(), "box_iou_rotated: boxes1 and boxes2 are on different devices");
  TORCH_CHECK_VALUE(!aligned || boxes1.size(0) == boxes2.size(0),
                    "box_iou_rotated: aligned=True needs as many boxes2 as boxes1, got ", boxes1.size(0), " and ",
                    boxes2.size(0));
}

// nms_rotated, batched_nms_rotated: boxes [N, 5] and scores [N] of one floating dtype and device;
// idxs (when defined) int64 [N] on the same device.
inline void check_nms_rotated_args(const char* op, const at::Tensor& boxes, const at::Tensor& scores,
                                   const at::Tensor& idxs) {
  TORCH_CHECK_VALUE(boxes.dim() == 2 && boxes.size(1) == 5, op, ": boxes must be [N, 5], got ", boxes.sizes());
  TORCH_CHECK_VALUE(scores.dim() == 1 && scores.size(0) == boxes.size(0), op,
                    ": scores must be [N] for boxes [N, 5], got ", scores.sizes());
  TORCH_CHECK_TYPE(boxes.scalar_type() == scores.scalar_type(), op, ": boxes and scores dtypes differ");
  TORCH_CHECK_TYPE(at::isFloatingType(boxes.scalar_type()), op, ": boxes must be a floating dtype");
  TORCH_CHECK_VALUE(scores.device() == boxes.device(), op, ": boxes and scores are on different devices");
  if (idxs.defined()) {
    TORCH_CHECK_VALUE(idxs.dim() == 1 && idxs.size(0) == boxes.size(0), op, ": idxs must be [N] for boxes [N, 5], got ",
                      idxs.sizes());
    TORCH_CHECK_TYPE(idxs.scalar_type() == at::kLong, op, ": idxs must be int64");
    TORCH_CHECK_VALUE(idxs.device() == boxes.device(), op, ": boxes and idxs are on different devices");
  }
}

// roi_align_rotated: rois [K, 6] (batch index, x_ctr, y_ctr, w, h, angle) of `like`'s dtype and device,
// a positive output size and spatial scale.
inline void check_roi_align_rotated_args(const char* op, const at::Tensor& rois, const at::Tensor& like,
                                         double spatial_scale, int64_t pooled_height, int64_t pooled_width) {
  TORCH_CHECK_VALUE(rois.dim() == 2 && rois.size(1) == 6, op, ": rois must be [K, 6], got ", rois.sizes());
  TORCH_CHECK_TYPE(rois.scalar_type() == like.scalar_type(), op, ": rois dtype ", rois.scalar_type(),
                   " differs from the input's ", like.scalar_type());
  TORCH_CHECK_TYPE(at::isFloatingType(like.scalar_type()), op, ": input must be a floating dtype");
  TORCH_CHECK_VALUE(rois.device() == like.device(), op, ": rois is on ", rois.device(), ", the input on ",
                    like.device());
  check_pooled_size(op, pooled_height, pooled_width);
  check_spatial_scales(op, {spatial_scale});
}

}  // namespace roiops
