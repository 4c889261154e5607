// Position-sensitive RoIPool (Dai et al., R-FCN) on CUDA: the average of each quantized bin of the
// bin's own input channel (common/ps_roi_math.h: ps_roi_pool_bin, ps_input_channel, as on the CPU),
// and its backward, which spreads each bin's gradient evenly over its pixels.
//
// One thread per pooled element, in the output's memory order; the sum runs over the bin in
// row-major order and is divided by the area, as on the CPU. Maps are read through their strides
// (NCHW and channels_last in place); outputs follow the CPU's memory-format rule. A RoI with a bad
// batch index raises on the host (outside CUDA graph capture) and gives empty bins in the kernels.
//
// Backward: atomicAdd into an accumulation buffer (float32 for the half types); under
// torch.use_deterministic_algorithms(True) the op raises (alertNotDeterministic); the CPU kernel is
// deterministic.

#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/Atomic.cuh>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <type_traits>

#include "common/box_geometry.h"
#include "common/checks.h"
#include "common/memory_format.h"
#include "common/ps_roi_math.h"
#include "cuda/checks.cuh"
#include "cuda/launch.cuh"

namespace roiops {
namespace {

struct PsPoolShape {
  int64_t batch, channels, height, width, channels_out, pooled_height, pooled_width;
  double spatial_scale;
};

// The bin of pooled element p and its RoI's image (-1, with an empty bin, for a bad batch index).
template <typename scalar_t>
__device__ inline PoolBin ps_pool_element_bin(const scalar_t* __restrict__ rois, const PooledIndex& p,
                                              const PsPoolShape& s, int64_t* image) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* roi = rois + 5 * p.roi;
  const acc_t b = static_cast<acc_t>(roi[0]);
  if (!is_batch_index(b, s.batch)) {
    *image = -1;
    return PoolBin{0, 0, 0, 0};
  }
  *image = static_cast<int64_t>(b);
  return ps_roi_pool_bin(static_cast<acc_t>(roi[1]), static_cast<acc_t>(roi[2]), static_cast<acc_t>(roi[3]),
                         static_cast<acc_t>(roi[4]), static_cast<acc_t>(s.spatial_scale), p.ph, p.pw,
                         s.pooled_height, s.pooled_width, s.height, s.width);
}

template <typename scalar_t, bool kChannelsLast>
__global__ void ps_roi_pool_forward_kernel_cuda(const scalar_t* __restrict__ input, StridesNCHW st,
                                                const scalar_t* __restrict__ rois, int64_t num_rois, PsPoolShape s,
                                                scalar_t* __restrict__ output) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = num_rois * s.channels_out * s.pooled_height * s.pooled_width;
  for (const int64_t idx : grid_stride_range(total)) {
    const PooledIndex p = decode_pooled_index<kChannelsLast>(idx, s.channels_out, s.pooled_height, s.pooled_width);
    int64_t n;
    const PoolBin bin = ps_pool_element_bin(rois, p, s, &n);
    if (bin.empty()) {
      output[idx] = scalar_t(0);
      continue;
    }
    const int64_t c_in = ps_input_channel(p.channel, p.ph, p.pw, s.pooled_height, s.pooled_width);
    const scalar_t* plane = input + n * st.n + c_in * st.c;
    acc_t sum = 0;
    for (int64_t h = bin.h_start; h < bin.h_end; ++h) {
      for (int64_t w = bin.w_start; w < bin.w_end; ++w) {
        sum += static_cast<acc_t>(plane[h * st.h + w * st.w]);
      }
    }
    const acc_t area = static_cast<acc_t>((bin.h_end - bin.h_start) * (bin.w_end - bin.w_start));
    output[idx] = static_cast<scalar_t>(sum / area);
  }
}

template <typename scalar_t, bool kChannelsLast>
__global__ void ps_roi_pool_backward_atomic_kernel_cuda(const scalar_t* __restrict__ grad, StridesNCHW gs,
                                                        const scalar_t* __restrict__ rois, int64_t num_rois,
                                                        PsPoolShape s, at::opmath_type<scalar_t>* __restrict__ gi,
                                                        StridesNCHW is) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = num_rois * s.channels_out * s.pooled_height * s.pooled_width;
  for (const int64_t idx : grid_stride_range(total)) {
    const PooledIndex p = decode_pooled_index<kChannelsLast>(idx, s.channels_out, s.pooled_height, s.pooled_width);
    int64_t n;
    const PoolBin bin = ps_pool_element_bin(rois, p, s, &n);
    if (bin.empty()) {
      continue;
    }
    const acc_t area = static_cast<acc_t>((bin.h_end - bin.h_start) * (bin.w_end - bin.w_start));
    const acc_t g = static_cast<acc_t>(grad[p.roi * gs.n + p.channel * gs.c + p.ph * gs.h + p.pw * gs.w]) / area;
    if (g == acc_t(0)) {
      continue;
    }
    const int64_t c_in = ps_input_channel(p.channel, p.ph, p.pw, s.pooled_height, s.pooled_width);
    acc_t* plane = gi + n * is.n + c_in * is.c;
    for (int64_t h = bin.h_start; h < bin.h_end; ++h) {
      for (int64_t w = bin.w_start; w < bin.w_end; ++w) {
        gpuAtomicAdd(plane + h * is.h + w * is.w, g);
      }
    }
  }
}

at::Tensor ps_roi_pool_forward_cuda(const at::Tensor& input, const at::Tensor& rois_in, double spatial_scale,
                                    int64_t pooled_height, int64_t pooled_width) {
  const char* op = "ps_roi_pool";
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
  const PsPoolShape shape{input.size(0), input.size(1), input.size(2), input.size(3),
                          channels_out,  pooled_height, pooled_width,  spatial_scale};
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "ps_roi_pool_forward_cuda", [&] {
    auto launch = [&](auto channels_last_tag) {
      constexpr bool kCL = decltype(channels_last_tag)::value;
      ps_roi_pool_forward_kernel_cuda<scalar_t, kCL><<<grid_for(out.numel()), kThreads, 0, stream>>>(
          input.const_data_ptr<scalar_t>(), strides_of(input), rois.const_data_ptr<scalar_t>(), num_rois, shape,
          out.mutable_data_ptr<scalar_t>());
    };
    channels_last ? launch(std::true_type{}) : launch(std::false_type{});
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor ps_roi_pool_backward_cuda(const at::Tensor& grad, const at::Tensor& rois_in, double spatial_scale,
                                     int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                     int64_t channels, int64_t height, int64_t width, bool channels_last) {
  const char* op = "ps_roi_pool_backward";
  const int64_t channels_out = check_ps_roi_backward_args(op, grad, rois_in, spatial_scale, pooled_height,
                                                          pooled_width, batch_size, channels, height, width);
  TORCH_CHECK(grad.is_cuda(), op, ": grad must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(grad.device());
  at::Tensor grad_input = zeroed_grad_buffer(grad, {batch_size, channels, height, width}, channels_last);
  const int64_t num_rois = rois_in.size(0);
  if (num_rois > 0 && grad.numel() > 0 && grad_input.numel() > 0) {
    check_batch_indices_cuda(op, rois_in, batch_size);
    at::globalContext().alertNotDeterministic("ps_roi_pool_backward_cuda");
    const at::Tensor rois = rois_in.contiguous();
    const PsPoolShape shape{batch_size,   channels,      height,       width,
                            channels_out, pooled_height, pooled_width, spatial_scale};
    const bool grad_channels_last = use_channels_last(grad);
    cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "ps_roi_pool_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      auto launch = [&](auto channels_last_tag) {
        constexpr bool kCL = decltype(channels_last_tag)::value;
        ps_roi_pool_backward_atomic_kernel_cuda<scalar_t, kCL><<<grid_for(grad.numel()), kThreads, 0, stream>>>(
            grad.const_data_ptr<scalar_t>(), strides_of(grad), rois.const_data_ptr<scalar_t>(), num_rois, shape,
            grad_input.mutable_data_ptr<acc_t>(), strides_of(grad_input));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      };
      grad_channels_last ? launch(std::true_type{}) : launch(std::false_type{});
    });
  }
  return in_grad_dtype(grad_input, grad);
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CUDA, m) {
  m.impl("ps_roi_pool", &ps_roi_pool_forward_cuda);
  m.impl("ps_roi_pool_backward", &ps_roi_pool_backward_cuda);
}

}  // namespace roiops
