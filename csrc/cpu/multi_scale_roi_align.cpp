// The FPN pooler on the CPU: assigns every RoI to a pyramid level (FPN eq. 1, common/fpn_level.h)
// and RoIAligns it there, all levels in one pass of roi_align.cpp's kernels, with no per-level
// gather of RoIs and scatter of results. Its box gradient is in roi_align_box_grad.cpp.

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <type_traits>
#include <vector>

#include "common/checks.h"
#include "common/fpn_level.h"
#include "cpu/roi_align.h"

namespace roiops {
namespace cpu {

std::vector<int64_t> assign_levels_cpu(const char* op, const at::Tensor& rois_in,
                                       const std::vector<double>& spatial_scales, double canonical_scale,
                                       int64_t canonical_level) {
  check_fpn_level_args(op, rois_in, spatial_scales, canonical_scale);
  int64_t k_min, k_max;
  fpn_level_range(spatial_scales, &k_min, &k_max);
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
  const char* op = "multi_scale_roi_align";
  check_scale_per_map(op, features.size(), spatial_scales.size());
  const std::vector<double> scales = spatial_scales.vec();
  const std::vector<int64_t> levels = assign_levels_cpu(op, rois, scales, canonical_scale, canonical_level);
  return roi_align_forward_levels_cpu(op, features.vec(), rois, scales, levels.data(), pooled_height, pooled_width,
                                      sampling_ratio, aligned);
}

std::vector<at::Tensor> multi_scale_roi_align_backward_cpu(
    const at::Tensor& grad, const at::Tensor& rois, at::ArrayRef<double> spatial_scales, int64_t pooled_height,
    int64_t pooled_width, int64_t batch_size, int64_t channels, at::IntArrayRef heights, at::IntArrayRef widths,
    int64_t sampling_ratio, bool aligned, double canonical_scale, int64_t canonical_level, bool channels_last) {
  const char* op = "multi_scale_roi_align_backward";
  check_scale_per_map(op, heights.size(), spatial_scales.size());
  check_scale_per_map(op, widths.size(), spatial_scales.size());
  const std::vector<double> scales = spatial_scales.vec();
  const std::vector<int64_t> levels = assign_levels_cpu(op, rois, scales, canonical_scale, canonical_level);
  return roi_align_backward_levels_cpu(op, grad, rois, scales, levels.data(), batch_size, channels, heights.vec(),
                                       widths.vec(), pooled_height, pooled_width, sampling_ratio, aligned,
                                       channels_last);
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CPU, m) {
  m.impl("multi_scale_roi_align", &multi_scale_roi_align_forward_cpu);
  m.impl("multi_scale_roi_align_backward", &multi_scale_roi_align_backward_cpu);
}

}  // namespace cpu
}  // namespace roiops
