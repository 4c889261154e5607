// CPU RoIAlign host drivers over a pyramid of maps, shared by the one-map op (roi_align.cpp, which
// defines them), the FPN pooler (multi_scale_roi_align.cpp) and the box-gradient ops
// (roi_align_box_grad.cpp). Mirrors cuda/roi_align.cuh.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace roiops {
namespace cpu {

// features: the pyramid levels ([N, C, H_l, W_l], one dtype); levels: the level of each RoI or
// nullptr for one level. Returns [K, C, PH, PW] in the memory format the kernels chose
// (use_channels_last of the first map).
at::Tensor roi_align_forward_levels_cpu(const char* op, const std::vector<at::Tensor>& features,
                                        const at::Tensor& rois, const std::vector<double>& spatial_scales,
                                        const int64_t* levels, int64_t pooled_height, int64_t pooled_width,
                                        int64_t sampling_ratio, bool aligned);

// Gradient of every level's map, [batch_size, channels, heights[l], widths[l]] in grad's dtype,
// channels_last in memory when channels_last. Deterministic: one writer per element.
std::vector<at::Tensor> roi_align_backward_levels_cpu(
    const char* op, const at::Tensor& grad, const at::Tensor& rois, const std::vector<double>& spatial_scales,
    const int64_t* levels, int64_t batch_size, int64_t channels, const std::vector<int64_t>& heights,
    const std::vector<int64_t>& widths, int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
    bool aligned, bool channels_last);

// The FPN level index of every RoI (rois: [K, 5] in image pixels), clamped to the maps there are
// (all 0 for one map). Defined in multi_scale_roi_align.cpp.
std::vector<int64_t> assign_levels_cpu(const char* op, const at::Tensor& rois,
                                       const std::vector<double>& spatial_scales, double canonical_scale,
                                       int64_t canonical_level);

}  // namespace cpu
}  // namespace roiops
