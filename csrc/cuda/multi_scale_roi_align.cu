// The FPN pooler on CUDA: one kernel assigns every RoI to a pyramid level (FPN eq. 1,
// common/fpn_level.h, the CPU's formula), then roi_align.cu's kernels pool all levels in a single
// launch: no per-level gather of RoIs, no scatter of results, no host synchronisation. Its box
// gradient is in roi_align_box_grad.cu.

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <type_traits>
#include <vector>

#include "common/checks.h"
#include "common/fpn_level.h"
#include "cuda/launch.cuh"
#include "cuda/roi_align.cuh"

namespace roiops {
namespace {

// levels[k] = pyramid level index of RoI k, clamped to [0, last].
template <typename scalar_t>
__global__ void fpn_levels_kernel_cuda(const scalar_t* __restrict__ rois, int64_t num_rois, double canonical_scale,
                                       int64_t canonical_level, int64_t k_min, int64_t k_max, int64_t last,
                                       int64_t* __restrict__ levels) {
  // The box dtype, as the CPU and torchvision compute the levels (float32 for float32 boxes).
  using level_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
  for (const int64_t k : grid_stride_range(num_rois)) {
    const scalar_t* r = rois + 5 * k;
    const int64_t l = fpn_level_index<level_t>(static_cast<level_t>(r[1]), static_cast<level_t>(r[2]),
                                               static_cast<level_t>(r[3]), static_cast<level_t>(r[4]),
                                               static_cast<level_t>(canonical_scale), canonical_level, k_min, k_max);
    levels[k] = l < 0 ? 0 : l > last ? last : l;
  }
}

}  // namespace

at::Tensor assign_levels_cuda(const char* op, const at::Tensor& rois_in, const std::vector<double>& spatial_scales,
                              double canonical_scale, int64_t canonical_level) {
  check_fpn_level_args(op, rois_in, spatial_scales, canonical_scale);
  TORCH_CHECK(rois_in.is_cuda(), op, ": rois must be a CUDA tensor");
  const int64_t last = static_cast<int64_t>(spatial_scales.size()) - 1;
  if (last == 0) {
    return at::Tensor();
  }
  int64_t k_min, k_max;
  fpn_level_range(spatial_scales, &k_min, &k_max);
  const c10::cuda::CUDAGuard guard(rois_in.device());
  const at::Tensor rois = rois_in.contiguous();
  const int64_t num_rois = rois.size(0);
  at::Tensor levels = at::empty({num_rois}, rois.options().dtype(at::kLong));
  if (num_rois == 0) {
    return levels;
  }
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, rois.scalar_type(), "fpn_levels_cuda", [&] {
    fpn_levels_kernel_cuda<scalar_t><<<grid_for(num_rois), kThreads, 0, stream>>>(
        rois.const_data_ptr<scalar_t>(), num_rois, canonical_scale, canonical_level, k_min, k_max, last,
        levels.mutable_data_ptr<int64_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return levels;
}

namespace {

at::Tensor multi_scale_roi_align_forward_cuda(at::TensorList features, const at::Tensor& rois,
                                              at::ArrayRef<double> spatial_scales, int64_t pooled_height,
                                              int64_t pooled_width, int64_t sampling_ratio, bool aligned,
                                              double canonical_scale, int64_t canonical_level) {
  const char* op = "multi_scale_roi_align";
  check_scale_per_map(op, features.size(), spatial_scales.size());
  const std::vector<double> scales = spatial_scales.vec();
  const at::Tensor levels = assign_levels_cuda(op, rois, scales, canonical_scale, canonical_level);
  return roi_align_forward_levels_cuda(op, features.vec(), rois, scales, levels, pooled_height, pooled_width,
                                       sampling_ratio, aligned);
}

std::vector<at::Tensor> multi_scale_roi_align_backward_cuda(
    const at::Tensor& grad, const at::Tensor& rois, at::ArrayRef<double> spatial_scales, int64_t pooled_height,
    int64_t pooled_width, int64_t batch_size, int64_t channels, at::IntArrayRef heights, at::IntArrayRef widths,
    int64_t sampling_ratio, bool aligned, double canonical_scale, int64_t canonical_level, bool channels_last) {
  const char* op = "multi_scale_roi_align_backward";
  check_scale_per_map(op, heights.size(), spatial_scales.size());
  check_scale_per_map(op, widths.size(), spatial_scales.size());
  const std::vector<double> scales = spatial_scales.vec();
  const at::Tensor levels = assign_levels_cuda(op, rois, scales, canonical_scale, canonical_level);
  return roi_align_backward_levels_cuda(op, grad, rois, scales, levels, batch_size, channels, heights.vec(),
                                        widths.vec(), pooled_height, pooled_width, sampling_ratio, aligned,
                                        channels_last);
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CUDA, m) {
  m.impl("multi_scale_roi_align", &multi_scale_roi_align_forward_cuda);
  m.impl("multi_scale_roi_align_backward", &multi_scale_roi_align_backward_cuda);
}

}  // namespace roiops
