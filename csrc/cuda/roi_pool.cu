// RoIPool (Girshick, Fast R-CNN) on CUDA: the max over each quantized bin (common/roi_pool_bin.h,
// as on the CPU) with its argmax, and the backward that routes each bin's gradient to its argmax
// pixel.
//
// Semantics are the CPU kernel's: ties go to the first pixel in row-major order; a NaN in a bin
// wins (output NaN, as torch.max); an empty bin (outside the map, or a box with a NaN coordinate)
// gives 0 with argmax -1 and no gradient. The input is read through its strides (NCHW and
// channels_last in place); outputs take the CPU's memory-format rule.
//
// Backward: atomicAdd into an accumulation buffer; under torch.use_deterministic_algorithms(True)
// the destinations are computed by a kernel and summed with index_put_(accumulate=True), which
// torch then runs deterministically (sorted by destination).

#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/Atomic.cuh>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>
#include <type_traits>

#include "common/box_geometry.h"
#include "common/checks.h"
#include "common/memory_format.h"
#include "common/roi_pool_bin.h"
#include "cuda/checks.cuh"
#include "cuda/launch.cuh"

namespace roiops {
namespace {

// Batch index of a RoI, or -1 when it is not an integer in [0, batch) (the host check raises for
// those; a direct call while capturing a CUDA graph gets empty bins instead of a bad read).
template <typename scalar_t>
__device__ inline int64_t roi_batch_index(const scalar_t* roi, int64_t batch) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t b = static_cast<acc_t>(roi[0]);
  return is_batch_index(b, batch) ? static_cast<int64_t>(b) : -1;
}

template <typename scalar_t, bool kChannelsLast>
__global__ void roi_pool_forward_kernel_cuda(const scalar_t* __restrict__ input, StridesNCHW st, int64_t batch,
                                             int64_t channels, int64_t height, int64_t width,
                                             const scalar_t* __restrict__ rois, int64_t num_rois, double spatial_scale,
                                             int64_t pooled_height, int64_t pooled_width,
                                             scalar_t* __restrict__ output, int64_t* __restrict__ argmax) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = num_rois * channels * pooled_height * pooled_width;
  for (const int64_t idx : grid_stride_range(total)) {
    const PooledIndex p = decode_pooled_index<kChannelsLast>(idx, channels, pooled_height, pooled_width);
    const scalar_t* roi = rois + 5 * p.roi;
    const int64_t n = roi_batch_index(roi, batch);
    PoolBin bin{0, 0, 0, 0};
    if (n >= 0) {
      bin = roi_pool_bin(static_cast<acc_t>(roi[1]), static_cast<acc_t>(roi[2]), static_cast<acc_t>(roi[3]),
                         static_cast<acc_t>(roi[4]), static_cast<acc_t>(spatial_scale), p.ph, p.pw, pooled_height,
                         pooled_width, height, width);
    }
    scalar_t best = scalar_t(0);
    int64_t best_at = -1;
    if (!bin.empty()) {
      const scalar_t* plane = input + n * st.n + p.channel * st.c;
      best_at = bin.h_start * width + bin.w_start;
      best = plane[bin.h_start * st.h + bin.w_start * st.w];
      for (int64_t h = bin.h_start; h < bin.h_end; ++h) {
        for (int64_t w = bin.w_start; w < bin.w_end; ++w) {
          const scalar_t v = plane[h * st.h + w * st.w];
          if (best == best && !(v <= best)) {  // v > best, or v is the first NaN
            best = v;
            best_at = h * width + w;
          }
        }
      }
    }
    output[idx] = best;
    argmax[idx] = best_at;
  }
}

// Element offset in grad_input (strides gis) that pooled element p's gradient goes to: its argmax
// pixel; -1 for an empty bin, an invalid RoI or an out-of-range argmax.
template <typename scalar_t>
__device__ inline int64_t argmax_destination(const PooledIndex& p, const int64_t* __restrict__ argmax,
                                             const StridesNCHW& as, const scalar_t* __restrict__ rois, int64_t batch,
                                             int64_t height, int64_t width, const StridesNCHW& gis) {
  const int64_t n = roi_batch_index(rois + 5 * p.roi, batch);
  const int64_t a = argmax[p.roi * as.n + p.channel * as.c + p.ph * as.h + p.pw * as.w];
  if (n < 0 || a < 0 || a >= height * width) {
    return -1;
  }
  return n * gis.n + p.channel * gis.c + (a / width) * gis.h + (a % width) * gis.w;
}

// Destination of each gradient element in the flat accumulation buffer, or `dump` (one slot past
// the end) for an empty bin, an invalid RoI or an out-of-range argmax.
template <typename scalar_t, bool kChannelsLast>
__global__ void roi_pool_destinations_kernel_cuda(const int64_t* __restrict__ argmax, StridesNCHW as,
                                                  const scalar_t* __restrict__ rois, int64_t num_rois,
                                                  int64_t batch, int64_t channels, int64_t height, int64_t width,
                                                  int64_t pooled_height, int64_t pooled_width, StridesNCHW gis,
                                                  int64_t dump, int64_t* __restrict__ destinations) {
  const int64_t total = num_rois * channels * pooled_height * pooled_width;
  for (const int64_t idx : grid_stride_range(total)) {
    const PooledIndex p = decode_pooled_index<kChannelsLast>(idx, channels, pooled_height, pooled_width);
    const int64_t dest = argmax_destination(p, argmax, as, rois, batch, height, width, gis);
    destinations[idx] = dest >= 0 ? dest : dump;
  }
}

template <typename scalar_t, bool kChannelsLast>
__global__ void roi_pool_backward_atomic_kernel_cuda(const scalar_t* __restrict__ grad, StridesNCHW gs,
                                                     const int64_t* __restrict__ argmax, StridesNCHW as,
                                                     const scalar_t* __restrict__ rois, int64_t num_rois,
                                                     int64_t batch, int64_t channels, int64_t height, int64_t width,
                                                     int64_t pooled_height, int64_t pooled_width, StridesNCHW gis,
                                                     at::opmath_type<scalar_t>* __restrict__ grad_input) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = num_rois * channels * pooled_height * pooled_width;
  for (const int64_t idx : grid_stride_range(total)) {
    const PooledIndex p = decode_pooled_index<kChannelsLast>(idx, channels, pooled_height, pooled_width);
    const int64_t dest = argmax_destination(p, argmax, as, rois, batch, height, width, gis);
    if (dest < 0) {
      continue;
    }
    gpuAtomicAdd(grad_input + dest,
                 static_cast<acc_t>(grad[p.roi * gs.n + p.channel * gs.c + p.ph * gs.h + p.pw * gs.w]));
  }
}

std::tuple<at::Tensor, at::Tensor> roi_pool_forward_cuda(const at::Tensor& input, const at::Tensor& rois_in,
                                                         double spatial_scale, int64_t pooled_height,
                                                         int64_t pooled_width) {
  check_roi_pool_args(input, rois_in, spatial_scale, pooled_height, pooled_width);
  TORCH_CHECK(input.is_cuda(), "roi_pool: input must be a CUDA tensor");
  TORCH_CHECK_VALUE(rois_in.device() == input.device(), "roi_pool: rois and input are on different devices");
  const c10::cuda::CUDAGuard guard(input.device());
  const bool channels_last = use_channels_last(input);
  const auto format = memory_format_for(channels_last);
  const int64_t batch_size = input.size(0), channels = input.size(1), height = input.size(2),
                width = input.size(3), num_rois = rois_in.size(0);
  at::Tensor out = at::empty({num_rois, channels, pooled_height, pooled_width}, input.options().memory_format(format));
  at::Tensor argmax = at::empty(out.sizes(), input.options().dtype(at::kLong).memory_format(format));
  if (num_rois == 0) {
    return {out, argmax};
  }
  check_batch_indices_cuda("roi_pool", rois_in, batch_size);
  if (out.numel() == 0) {
    return {out, argmax};
  }
  const at::Tensor rois = rois_in.contiguous();
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_pool_forward_cuda", [&] {
    auto launch = [&](auto channels_last_tag) {
      constexpr bool kCL = decltype(channels_last_tag)::value;
      roi_pool_forward_kernel_cuda<scalar_t, kCL><<<grid_for(out.numel()), kThreads, 0, stream>>>(
          input.const_data_ptr<scalar_t>(), strides_of(input), batch_size, channels, height, width,
          rois.const_data_ptr<scalar_t>(), num_rois, spatial_scale, pooled_height, pooled_width,
          out.mutable_data_ptr<scalar_t>(), argmax.mutable_data_ptr<int64_t>());
    };
    channels_last ? launch(std::true_type{}) : launch(std::false_type{});
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {out, argmax};
}

at::Tensor roi_pool_backward_cuda(const at::Tensor& grad, const at::Tensor& rois_in, const at::Tensor& argmax,
                                  int64_t batch_size, int64_t channels, int64_t height, int64_t width,
                                  bool channels_last) {
  check_roi_pool_backward_args(grad, rois_in, argmax, channels);
  const int64_t num_rois = rois_in.size(0);
  TORCH_CHECK_TYPE(rois_in.scalar_type() == grad.scalar_type(), "roi_pool_backward: rois and grad dtypes differ");
  TORCH_CHECK(grad.is_cuda() && argmax.device() == grad.device() && rois_in.device() == grad.device(),
              "roi_pool_backward: grad, rois and argmax must be on the same CUDA device");
  TORCH_CHECK_VALUE(batch_size >= 0 && channels >= 0 && height >= 0 && width >= 0,
                    "roi_pool_backward: negative input size");
  const c10::cuda::CUDAGuard guard(grad.device());
  at::Tensor grad_input = zeroed_grad_buffer(grad, {batch_size, channels, height, width}, channels_last);
  if (num_rois > 0 && grad.numel() > 0 && grad_input.numel() > 0) {
    const at::Tensor rois = rois_in.contiguous();
    const int64_t pooled_height = grad.size(2), pooled_width = grad.size(3);
    const bool grad_channels_last = use_channels_last(grad);
    cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "roi_pool_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      auto launch = [&](auto channels_last_tag) {
        constexpr bool kCL = decltype(channels_last_tag)::value;
        if (at::globalContext().deterministicAlgorithms()) {
          // Destinations in grad's memory order, then a deterministic (sorted) index_put_ into a
          // flat view of the buffer with one extra slot that catches the skipped elements.
          const int64_t dump = grad_input.numel();
          at::Tensor flat = at::zeros({dump + 1}, grad_input.options());
          at::Tensor dest = at::empty({grad.numel()}, grad.options().dtype(at::kLong));
          roi_pool_destinations_kernel_cuda<scalar_t, kCL><<<grid_for(grad.numel()), kThreads, 0, stream>>>(
              argmax.const_data_ptr<int64_t>(), strides_of(argmax), rois.const_data_ptr<scalar_t>(), num_rois,
              batch_size, channels, height, width, pooled_height, pooled_width, strides_of(grad_input), dump,
              dest.mutable_data_ptr<int64_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
          // grad's elements in the same (memory) order as dest.
          const at::Tensor values =
              (kCL ? grad.permute({0, 2, 3, 1}) : grad).contiguous().reshape({-1}).to(grad_input.scalar_type());
          flat.index_put_({dest}, values, /*accumulate=*/true);
          // grad_input's storage order is its memory format, so the flat buffer maps onto it.
          grad_input.as_strided({dump}, {1}).copy_(flat.narrow(0, 0, dump));
        } else {
          roi_pool_backward_atomic_kernel_cuda<scalar_t, kCL><<<grid_for(grad.numel()), kThreads, 0, stream>>>(
              grad.const_data_ptr<scalar_t>(), strides_of(grad), argmax.const_data_ptr<int64_t>(), strides_of(argmax),
              rois.const_data_ptr<scalar_t>(), num_rois, batch_size, channels, height, width, pooled_height,
              pooled_width, strides_of(grad_input), grad_input.mutable_data_ptr<acc_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      };
      grad_channels_last ? launch(std::true_type{}) : launch(std::false_type{});
    });
  }
  return in_grad_dtype(grad_input, grad);
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CUDA, m) {
  m.impl("roi_pool", &roi_pool_forward_cuda);
  m.impl("roi_pool_backward", &roi_pool_backward_cuda);
}

}  // namespace roiops
