// The CPU box decoding kernel (cpu/box_coder.cpp), for the ops that decode gathered codes
// themselves (rpn_proposals, detections_from_box_head) without going through the dispatcher.
#pragma once

#include <array>
#include <cstdint>

namespace roiops {

// out[k] = the decoded box of codes[k] (row k of [n, 4 * classes]) relative to boxes[k / classes],
// each step rounded as the element-wise PyTorch formula rounds it (common/box_coding.h), clamped to
// [0, image_width] x [0, image_height] when clip_to_image. Instantiated for float, double, Half and
// BFloat16; parallel over boxes unless called from inside a parallel region.
template <typename scalar_t>
void box_decode_kernel_cpu(const scalar_t* codes, const scalar_t* boxes, scalar_t* out, int64_t n, int64_t classes,
                           const std::array<double, 4>& weights, double bbox_xform_clip, bool clip_to_image,
                           double image_height, double image_width);

}  // namespace roiops
