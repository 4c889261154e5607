// The FPN pooler on the CPU: assigns every RoI to a pyramid level (FPN eq. 1, fpn_level_index in
// roi_align_math.h) and RoIAligns it there, all levels in one pass of the shared kernels
// (roi_align_kernels.h), with no per-level gather of RoIs and scatter of results. Also home of
// roi_align_backward_rois_backward, the second derivatives through the box gradient of both
// roi_align (one map) and the pooler, since it takes the pooler's level arguments.

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "cpu/roi_align_kernels.h"

namespace roiops {
namespace cpu {
namespace {

// The coarsest and finest pyramid exponents k (scale 2^-k) from the first and last maps' scales,
// computed as torchvision does: -log2 of the float32 scale, truncated.
void level_range(const std::vector<double>& spatial_scales, int64_t* k_min, int64_t* k_max) {
  *k_min = static_cast<int64_t>(-std::log2(static_cast<float>(spatial_scales.front())));
  *k_max = static_cast<int64_t>(-std::log2(static_cast<float>(spatial_scales.back())));
}

}  // namespace

std::vector<int64_t> assign_levels(const char* op, const at::Tensor& rois_in, const std::vector<double>& spatial_scales,
                                   double canonical_scale, int64_t canonical_level) {
  TORCH_CHECK_VALUE(!spatial_scales.empty(), op, ": need at least one feature map");
  TORCH_CHECK_VALUE(rois_in.dim() == 2 && rois_in.size(1) == 5, op, ": rois must be [K, 5], got ", rois_in.sizes());
  TORCH_CHECK_VALUE(canonical_scale > 0, op, ": canonical_scale must be positive");
  int64_t k_min, k_max;
  level_range(spatial_scales, &k_min, &k_max);
  const int64_t last = static_cast<int64_t>(spatial_scales.size()) - 1;
  const at::Tensor rois = rois_in.contiguous();
  const int64_t num_rois = rois.size(0);
  std::vector<int64_t> levels(num_rois, 0);
  if (last == 0) {
    return levels;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, rois.scalar_type(), "fpn_levels_cpu", [&] {
    // The box dtype, as torchvision computes the levels (float32 for float32 boxes).
    using level_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const scalar_t* r = rois.const_data_ptr<scalar_t>();
    for (int64_t k = 0; k < num_rois; ++k) {
      const int64_t l = fpn_level_index<level_t>(
          static_cast<level_t>(r[5 * k + 1]), static_cast<level_t>(r[5 * k + 2]), static_cast<level_t>(r[5 * k + 3]),
          static_cast<level_t>(r[5 * k + 4]), static_cast<level_t>(canonical_scale), canonical_level, k_min, k_max);
      levels[k] = l < 0 ? 0 : l > last ? last : l;
    }
  });
  return levels;
}

namespace {

at::Tensor multi_scale_roi_align_forward_cpu(at::TensorList features, const at::Tensor& rois,
                                             at::ArrayRef<double> spatial_scales, int64_t pooled_height,
                                             int64_t pooled_width, int64_t sampling_ratio, bool aligned,
                                             double canonical_scale, int64_t canonical_level) {
  TORCH_CHECK_VALUE(features.size() == spatial_scales.size(),
                    "multi_scale_roi_align: need one spatial scale per feature map, got ", features.size(),
                    " maps and ", spatial_scales.size(), " scales");
  const std::vector<double> scales(spatial_scales.begin(), spatial_scales.end());
  const std::vector<int64_t> levels = assign_levels("multi_scale_roi_align", rois, scales, canonical_scale, canonical_level);
  return roi_align_forward_levels_cpu("multi_scale_roi_align", features.vec(), rois, scales, levels.data(),
                                      pooled_height, pooled_width, sampling_ratio, aligned);
}

std::vector<at::Tensor> multi_scale_roi_align_backward_cpu(
    const at::Tensor& grad, const at::Tensor& rois, at::ArrayRef<double> spatial_scales, int64_t pooled_height,
    int64_t pooled_width, int64_t batch_size, int64_t channels, at::IntArrayRef heights, at::IntArrayRef widths,
    int64_t sampling_ratio, bool aligned, double canonical_scale, int64_t canonical_level, bool channels_last) {
  TORCH_CHECK_VALUE(heights.size() == spatial_scales.size() && widths.size() == spatial_scales.size(),
                    "multi_scale_roi_align_backward: need one height, width and scale per feature map");
  const std::vector<double> scales(spatial_scales.begin(), spatial_scales.end());
  const std::vector<int64_t> levels = assign_levels("multi_scale_roi_align_backward", rois, scales, canonical_scale, canonical_level);
  return roi_align_backward_levels_cpu("multi_scale_roi_align_backward", grad, rois, scales, levels.data(),
                                       batch_size, channels, heights.vec(), widths.vec(), pooled_height,
                                       pooled_width, sampling_ratio, aligned, channels_last);
}

at::Tensor multi_scale_roi_align_backward_rois_cpu(const at::Tensor& grad, at::TensorList features,
                                                   const at::Tensor& rois, at::ArrayRef<double> spatial_scales,
                                                   int64_t pooled_height, int64_t pooled_width,
                                                   int64_t sampling_ratio, bool aligned, double canonical_scale,
                                                   int64_t canonical_level) {
  TORCH_CHECK_VALUE(!features.empty() && features.size() == spatial_scales.size(),
                    "multi_scale_roi_align_backward_rois: need one spatial scale per feature map");
  const std::vector<double> scales(spatial_scales.begin(), spatial_scales.end());
  const std::vector<int64_t> levels = assign_levels("multi_scale_roi_align_backward_rois", rois, scales, canonical_scale, canonical_level);
  return roi_align_backward_rois_levels_cpu("multi_scale_roi_align_backward_rois", grad, features.vec(), rois,
                                            scales, levels.data(), pooled_height, pooled_width, sampling_ratio,
                                            aligned);
}

std::tuple<at::Tensor, std::vector<at::Tensor>, at::Tensor> roi_align_backward_rois_backward_cpu(
    const at::Tensor& grad, at::TensorList features, const at::Tensor& rois, const at::Tensor& grad_grad_rois,
    at::ArrayRef<double> spatial_scales, int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
    bool aligned, double canonical_scale, int64_t canonical_level, bool features_grad) {
  const char* op = "roi_align_backward_rois_backward";
  TORCH_CHECK_VALUE(!features.empty() && features.size() == spatial_scales.size(), op,
                    ": need one spatial scale per feature map");
  const std::vector<double> scales(spatial_scales.begin(), spatial_scales.end());
  const std::vector<int64_t> levels = assign_levels(op, rois, scales, canonical_scale, canonical_level);
  return roi_align_backward_rois_backward_levels_cpu(op, grad, features.vec(), rois, grad_grad_rois, scales,
                                                     levels.data(), pooled_height, pooled_width, sampling_ratio,
                                                     aligned, features_grad);
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CPU, m) {
  m.impl("multi_scale_roi_align", &multi_scale_roi_align_forward_cpu);
  m.impl("multi_scale_roi_align_backward", &multi_scale_roi_align_backward_cpu);
  m.impl("multi_scale_roi_align_backward_rois", &multi_scale_roi_align_backward_rois_cpu);
  m.impl("roi_align_backward_rois_backward", &roi_align_backward_rois_backward_cpu);
}

}  // namespace cpu
}  // namespace roiops
