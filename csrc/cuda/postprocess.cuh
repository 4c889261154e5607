// The CUDA host drivers that the detection post-processing drivers (rpn_proposals.cu,
// detections_from_box_head.cu) compose, called directly rather than through the dispatcher.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/OptionalArrayRef.h>

namespace roiops {

// roiops::box_decode on CUDA (box_coder.cu).
at::Tensor box_decode_cuda(const at::Tensor& rel_codes, const at::Tensor& boxes, at::ArrayRef<double> weights,
                           double bbox_xform_clip, at::OptionalIntArrayRef image_size);

// roiops::batched_nms on CUDA (nms.cu).
at::Tensor batched_nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                            double iou_threshold);

}  // namespace roiops
