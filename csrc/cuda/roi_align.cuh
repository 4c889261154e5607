// CUDA RoIAlign host drivers over a pyramid of maps, shared by the one-map op (roi_align.cu, which
// defines them), the FPN pooler (multi_scale_roi_align.cu) and the box-gradient ops
// (roi_align_box_grad.cu). Mirrors cpu/roi_align.h.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace roiops {

// features: the pyramid levels ([N, C, H_l, W_l], one dtype, any strides: read in place);
// levels: [K] int64 level of each RoI on the device, or undefined for one level. Returns
// [K, C, PH, PW], channels_last when use_channels_last(features[0]).
at::Tensor roi_align_forward_levels_cuda(const char* op, const std::vector<at::Tensor>& features,
                                         const at::Tensor& rois, const std::vector<double>& spatial_scales,
                                         const at::Tensor& levels, int64_t pooled_height, int64_t pooled_width,
                                         int64_t sampling_ratio, bool aligned);

// Gradient of every level's map, [batch_size, channels, heights[l], widths[l]] in grad's dtype,
// channels_last in memory when channels_last. Atomics, or the deterministic gather under
// torch.use_deterministic_algorithms(True).
std::vector<at::Tensor> roi_align_backward_levels_cuda(
    const char* op, const at::Tensor& grad, const at::Tensor& rois, const std::vector<double>& spatial_scales,
    const at::Tensor& levels, int64_t batch_size, int64_t channels, const std::vector<int64_t>& heights,
    const std::vector<int64_t>& widths, int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
    bool aligned, bool channels_last);

// The level of every RoI on the device (rois: [K, 5] in image pixels, FPN eq. 1), or an undefined
// tensor when there is one map. Defined in multi_scale_roi_align.cu.
at::Tensor assign_levels_cuda(const char* op, const at::Tensor& rois, const std::vector<double>& spatial_scales,
                              double canonical_scale, int64_t canonical_level);

}  // namespace roiops
