// The FPN pooler on CUDA: one kernel assigns every RoI to a pyramid level (FPN eq. 1,
// fpn_level_index in common/roi_align_math.h, the CPU's formula), then the shared RoIAlign kernels
// (roi_align.cu) pool all levels in a single launch: no per-level gather of RoIs, no scatter of
// results, no host synchronisation. Also registers roi_align_backward_rois_backward (second
// derivatives through the box gradient of roi_align and of the pooler), which takes the level
// arguments.

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cmath>
#include <type_traits>
#include <vector>

#include "common/roi_align_math.h"
#include "cuda/roi_align_kernels.cuh"
#include "cuda/roi_launch.cuh"

namespace roiops {
namespace {

// levels[k] = pyramid level index of RoI k, clamped to [0, last].
template <typename scalar_t>
__global__ void fpn_levels_kernel_cuda(const scalar_t* __restrict__ rois, int64_t num_rois, double canonical_scale,
                                       int64_t canonical_level, int64_t k_min, int64_t k_max, int64_t last,
                                       int64_t* __restrict__ levels) {
  // The box dtype, as the CPU and torchvision compute the levels (float32 for float32 boxes).
  using level_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < num_rois;
       k += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const scalar_t* r = rois + 5 * k;
    const int64_t l = fpn_level_index<level_t>(static_cast<level_t>(r[1]), static_cast<level_t>(r[2]),
                                               static_cast<level_t>(r[3]), static_cast<level_t>(r[4]),
                                               static_cast<level_t>(canonical_scale), canonical_level, k_min, k_max);
    levels[k] = l < 0 ? 0 : l > last ? last : l;
  }
}

// The level of every RoI on the device, or an undefined tensor when there is one map.
at::Tensor assign_levels_cuda(const char* op, const at::Tensor& rois_in, const std::vector<double>& spatial_scales,
                              double canonical_scale, int64_t canonical_level) {
  TORCH_CHECK_VALUE(!spatial_scales.empty(), op, ": need at least one feature map");
  TORCH_CHECK_VALUE(rois_in.dim() == 2 && rois_in.size(1) == 5, op, ": rois must be [K, 5], got ", rois_in.sizes());
  TORCH_CHECK_VALUE(canonical_scale > 0, op, ": canonical_scale must be positive");
  TORCH_CHECK(rois_in.is_cuda(), op, ": rois must be a CUDA tensor");
  const int64_t last = static_cast<int64_t>(spatial_scales.size()) - 1;
  if (last == 0) {
    return at::Tensor();
  }
  // The coarsest and finest pyramid exponents k (scale 2^-k), as the CPU computes them: -log2 of
  // the float32 scale, truncated.
  const int64_t k_min = static_cast<int64_t>(-std::log2(static_cast<float>(spatial_scales.front())));
  const int64_t k_max = static_cast<int64_t>(-std::log2(static_cast<float>(spatial_scales.back())));
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

at::Tensor multi_scale_roi_align_forward_cuda(at::TensorList features, const at::Tensor& rois,
                                              at::ArrayRef<double> spatial_scales, int64_t pooled_height,
                                              int64_t pooled_width, int64_t sampling_ratio, bool aligned,
                                              double canonical_scale, int64_t canonical_level) {
  const char* op = "multi_scale_roi_align";
  TORCH_CHECK_VALUE(features.size() == spatial_scales.size(), op, ": need one spatial scale per feature map, got ",
                    features.size(), " maps and ", spatial_scales.size(), " scales");
  const std::vector<double> scales(spatial_scales.begin(), spatial_scales.end());
  const at::Tensor levels = assign_levels_cuda(op, rois, scales, canonical_scale, canonical_level);
  return roi_align_forward_levels_cuda(op, features.vec(), rois, scales, levels, pooled_height, pooled_width,
                                       sampling_ratio, aligned);
}

std::vector<at::Tensor> multi_scale_roi_align_backward_cuda(
    const at::Tensor& grad, const at::Tensor& rois, at::ArrayRef<double> spatial_scales, int64_t pooled_height,
    int64_t pooled_width, int64_t batch_size, int64_t channels, at::IntArrayRef heights, at::IntArrayRef widths,
    int64_t sampling_ratio, bool aligned, double canonical_scale, int64_t canonical_level, bool channels_last) {
  const char* op = "multi_scale_roi_align_backward";
  TORCH_CHECK_VALUE(heights.size() == spatial_scales.size() && widths.size() == spatial_scales.size(), op,
                    ": need one height, width and scale per feature map");
  const std::vector<double> scales(spatial_scales.begin(), spatial_scales.end());
  const at::Tensor levels = assign_levels_cuda(op, rois, scales, canonical_scale, canonical_level);
  return roi_align_backward_levels_cuda(op, grad, rois, scales, levels, batch_size, channels, heights.vec(),
                                        widths.vec(), pooled_height, pooled_width, sampling_ratio, aligned,
                                        channels_last);
}

at::Tensor multi_scale_roi_align_backward_rois_cuda(const at::Tensor& grad, at::TensorList features,
                                                    const at::Tensor& rois, at::ArrayRef<double> spatial_scales,
                                                    int64_t pooled_height, int64_t pooled_width,
                                                    int64_t sampling_ratio, bool aligned, double canonical_scale,
                                                    int64_t canonical_level) {
  const char* op = "multi_scale_roi_align_backward_rois";
  TORCH_CHECK_VALUE(!features.empty() && features.size() == spatial_scales.size(), op,
                    ": need one spatial scale per feature map");
  const std::vector<double> scales(spatial_scales.begin(), spatial_scales.end());
  const at::Tensor levels = assign_levels_cuda(op, rois, scales, canonical_scale, canonical_level);
  return roi_align_backward_rois_levels_cuda(op, grad, features.vec(), rois, scales, levels, pooled_height,
                                             pooled_width, sampling_ratio, aligned);
}

std::tuple<at::Tensor, std::vector<at::Tensor>, at::Tensor> roi_align_backward_rois_backward_cuda(
    const at::Tensor& grad, at::TensorList features, const at::Tensor& rois, const at::Tensor& grad_grad_rois,
    at::ArrayRef<double> spatial_scales, int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
    bool aligned, double canonical_scale, int64_t canonical_level, bool features_grad) {
  const char* op = "roi_align_backward_rois_backward";
  TORCH_CHECK_VALUE(!features.empty() && features.size() == spatial_scales.size(), op,
                    ": need one spatial scale per feature map");
  const std::vector<double> scales(spatial_scales.begin(), spatial_scales.end());
  const at::Tensor levels = assign_levels_cuda(op, rois, scales, canonical_scale, canonical_level);
  return roi_align_backward_rois_backward_levels_cuda(op, grad, features.vec(), rois, grad_grad_rois, scales, levels,
                                                      pooled_height, pooled_width, sampling_ratio, aligned,
                                                      features_grad);
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CUDA, m) {
  m.impl("multi_scale_roi_align", &multi_scale_roi_align_forward_cuda);
  m.impl("multi_scale_roi_align_backward", &multi_scale_roi_align_backward_cuda);
  m.impl("multi_scale_roi_align_backward_rois", &multi_scale_roi_align_backward_rois_cuda);
  m.impl("roi_align_backward_rois_backward", &roi_align_backward_rois_backward_cuda);
}

}  // namespace roiops
