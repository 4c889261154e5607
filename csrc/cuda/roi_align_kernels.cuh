// CUDA RoIAlign host drivers shared by roi_align.cu (one feature map) and multi_scale_roi_align.cu
// (an FPN pyramid, each RoI pooled from its own level, all levels in one launch). Defined in
// roi_align.cu; only this pair of files includes this header. Mirrors cpu/roi_align_kernels.h.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <tuple>
#include <vector>

namespace roiops {

// Pyramid levels one launch can read (FPN uses 4 or 5).
constexpr int64_t kMaxLevelsCuda = 8;

// True when the kernels write channels_last outputs for this input: the CPU rule
// (cpu::use_channels_last, and roiops/_meta.py) — laid out channels_last and not also contiguous.
bool use_channels_last_cuda(const at::Tensor& input);

// Raises the CPU kernels' ValueError naming the first RoI whose batch index (rois[k, 0]) is not an
// integer in [0, batch_size). Costs one device-to-host copy, so it is skipped while the stream is
// being captured into a CUDA graph; the kernels then skip such RoIs (they pool to 0) rather than
// read out of bounds.
void check_batch_indices_cuda(const char* op, const at::Tensor& rois, int64_t batch_size);

// features: the pyramid levels ([N, C, H_l, W_l], one dtype, any strides: read in place);
// levels: [K] int64 level of each RoI on the device, or undefined for one level. Returns
// [K, C, PH, PW], channels_last when use_channels_last_cuda(features[0]).
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

// Gradient with respect to the box coordinates, [K, 5] (column 0 is 0), in the features' dtype.
// One thread block per RoI with a fixed-order reduction: deterministic without a second path.
at::Tensor roi_align_backward_rois_levels_cuda(const char* op, const at::Tensor& grad,
                                               const std::vector<at::Tensor>& features, const at::Tensor& rois,
                                               const std::vector<double>& spatial_scales, const at::Tensor& levels,
                                               int64_t pooled_height, int64_t pooled_width,
                                               int64_t sampling_ratio, bool aligned);

// Second derivatives through the box gradient (see cpu/roi_align_kernels.h): (d grad, d features
// (one per level in the feature's memory format, none unless features_grad), d rois). d grad and
// d rois are deterministic; d features uses atomics (torch.use_deterministic_algorithms raises).
std::tuple<at::Tensor, std::vector<at::Tensor>, at::Tensor> roi_align_backward_rois_backward_levels_cuda(
    const char* op, const at::Tensor& grad, const std::vector<at::Tensor>& features, const at::Tensor& rois,
    const at::Tensor& grad_grad_rois, const std::vector<double>& spatial_scales, const at::Tensor& levels,
    int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned, bool features_grad);

}  // namespace roiops
