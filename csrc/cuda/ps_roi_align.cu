// Position-sensitive RoIAlign (Dai et al., R-FCN) on CUDA: forward and backward to the input.
//
// One thread per pooled element (k, c_out, ph, pw), in the output's memory order. It reads only
// input channel ps_input_channel(c_out, ph, pw) (common/ps_roi_math.h) and walks its bin's
// samples with RoIAlign's own per-RoI geometry and sample walk (cuda/roi_align_roi.cuh over
// common/roi_align_math.h, aligned=true), so the CPU tests' numerics hold here. Maps are read
// through their strides (NCHW and channels_last in place); outputs follow the CPU's memory-format
// rule. A RoI with a bad batch index raises on the host (outside CUDA graph capture) and pools to
// 0 in the kernels.
//
// Backward: atomicAdd into an accumulation buffer (float32 for the half types, rounded once at the
// end). The order of the atomic additions is not fixed, so under
// torch.use_deterministic_algorithms(True) the op raises (alertNotDeterministic); the CPU kernel is
// deterministic.

#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <type_traits>
#include <vector>

#include "common/checks.h"
#include "common/memory_format.h"
#include "common/ps_roi_math.h"
#include "cuda/checks.cuh"
#include "cuda/launch.cuh"
#include "cuda/roi_align_roi.cuh"

namespace roiops {
namespace {

// s.channels is C_out: the pooled elements are [K, C_out, PH, PW].
template <typename scalar_t, bool kChannelsLast>
__global__ void ps_roi_align_forward_kernel_cuda(LevelMaps<const scalar_t> maps, const scalar_t* __restrict__ rois,
                                                 int64_t num_rois, PoolShape s, scalar_t* __restrict__ output) {
  using acc_t = at::opmath_type<scalar_t>;
  for_each_pooled_element<kChannelsLast>(maps, rois, nullptr, num_rois, s, [&](int64_t idx, const PooledIndex& p,
                                                                                const RoiAlignRoi<acc_t>& r) {
    if (!r.valid) {
      output[idx] = scalar_t(0);
      return;
    }
    const int64_t c_in = ps_input_channel(p.channel, p.ph, p.pw, s.pooled_height, s.pooled_width);
    const MapPlane<const scalar_t> m = maps.plane(0, r.batch_index, c_in);
    output[idx] = static_cast<scalar_t>(bin_sample_sum(m, r, p.ph, p.pw) * r.inv_count);
  });
}

template <typename scalar_t, bool kChannelsLast>
__global__ void ps_roi_align_backward_atomic_kernel_cuda(const scalar_t* __restrict__ grad, StridesNCHW gs,
                                                         const scalar_t* __restrict__ rois, int64_t num_rois,
                                                         PoolShape s, LevelMaps<at::opmath_type<scalar_t>> grads) {
  using acc_t = at::opmath_type<scalar_t>;
  for_each_pooled_grad<kChannelsLast>(grads, grad, gs, rois, nullptr, num_rois, s, [&](const PooledIndex& p,
                                                                                        const RoiAlignRoi<acc_t>& r,
                                                                                        acc_t gb) {
    const int64_t c_in = ps_input_channel(p.channel, p.ph, p.pw, s.pooled_height, s.pooled_width);
    scatter_bin_samples(grads.plane(0, r.batch_index, c_in), r, p.ph, p.pw, gb);
  });
}

at::Tensor ps_roi_align_forward_cuda(const at::Tensor& input, const at::Tensor& rois_in, double spatial_scale,
                                     int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio) {
  const char* op = "ps_roi_align";
  const int64_t channels_out = check_ps_roi_args(op, input, rois_in, spatial_scale, pooled_height, pooled_width);
  TORCH_CHECK(input.is_cuda(), op, ": input must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(input.device());
  const bool channels_last = use_channels_last(input);
  const int64_t num_rois = rois_in.size(0);
  at::Tensor out = at::empty({num_rois, channels_out, pooled_height, pooled_width},
                             input.options().memory_format(memory_format_for(channels_last)));
  if (num_rois == 0) {
    return out;
  }
  check_batch_indices_cuda(op, rois_in, input.size(0));
  if (out.numel() == 0) {
    return out;
  }
  const at::Tensor rois = rois_in.contiguous();
  const PoolShape shape{input.size(0), channels_out, pooled_height, pooled_width, sampling_ratio, /*aligned=*/true};
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "ps_roi_align_forward_cuda", [&] {
    const auto maps = maps_of<const scalar_t>(op, {input}, {spatial_scale});
    auto launch = [&](auto channels_last_tag) {
      constexpr bool kCL = decltype(channels_last_tag)::value;
      ps_roi_align_forward_kernel_cuda<scalar_t, kCL><<<grid_for(out.numel()), kThreads, 0, stream>>>(
          maps, rois.const_data_ptr<scalar_t>(), num_rois, shape, out.mutable_data_ptr<scalar_t>());
    };
    channels_last ? launch(std::true_type{}) : launch(std::false_type{});
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor ps_roi_align_backward_cuda(const at::Tensor& grad, const at::Tensor& rois_in, double spatial_scale,
                                      int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                      int64_t batch_size, int64_t channels, int64_t height, int64_t width,
                                      bool channels_last) {
  const char* op = "ps_roi_align_backward";
  const int64_t channels_out = check_ps_roi_backward_args(op, grad, rois_in, spatial_scale, pooled_height,
                                                          pooled_width, batch_size, channels, height, width);
  TORCH_CHECK(grad.is_cuda(), op, ": grad must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(grad.device());
  at::Tensor grad_input = zeroed_grad_buffer(grad, {batch_size, channels, height, width}, channels_last);
  const int64_t num_rois = rois_in.size(0);
  if (num_rois > 0 && grad.numel() > 0 && grad_input.numel() > 0) {
    check_batch_indices_cuda(op, rois_in, batch_size);
    at::globalContext().alertNotDeterministic("ps_roi_align_backward_cuda");
    const at::Tensor rois = rois_in.contiguous();
    const PoolShape shape{batch_size, channels_out, pooled_height, pooled_width, sampling_ratio, /*aligned=*/true};
    const bool grad_channels_last = use_channels_last(grad);
    cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "ps_roi_align_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const auto maps = maps_of<acc_t>(op, {grad_input}, {spatial_scale});
      // The threads walk grad in its memory order (coalesced reads).
      auto launch = [&](auto channels_last_tag) {
        constexpr bool kCL = decltype(channels_last_tag)::value;
        ps_roi_align_backward_atomic_kernel_cuda<scalar_t, kCL><<<grid_for(grad.numel()), kThreads, 0, stream>>>(
            grad.const_data_ptr<scalar_t>(), strides_of(grad), rois.const_data_ptr<scalar_t>(), num_rois, shape,
            maps);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      };
      grad_channels_last ? launch(std::true_type{}) : launch(std::false_type{});
    });
  }
  return in_grad_dtype(grad_input, grad);
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CUDA, m) {
  m.impl("ps_roi_align", &ps_roi_align_forward_cuda);
  m.impl("ps_roi_align_backward", &ps_roi_align_backward_cuda);
}

}  // namespace roiops
