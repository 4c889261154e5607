// RoIAlignRotated on CUDA: forward and backward to the input map. Same geometry and weights as the
// CPU kernels (common/roi_align_rotated_math.h, which uses RoIAlign's bilinear_axis).
//
// forward: one thread per output element, in the output's memory order (NCHW or channels_last),
//   reading the input through its strides.
// backward: one thread per element of the incoming gradient, scattering into a float32 (float64
//   for float64) accumulator with atomics: not deterministic, so it raises under
//   torch.use_deterministic_algorithms(True) (the CPU kernel is deterministic always).

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

#include <type_traits>

#include "common/memory_format.h"
#include "common/roi_align_rotated_math.h"
#include "common/rotated_checks.h"
#include "cuda/checks.cuh"
#include "cuda/launch.cuh"

namespace roiops {
namespace {

struct RotatedPoolShape {
  int64_t batch_size, channels, height, width, pooled_height, pooled_width, sampling_ratio;
  bool aligned;
};

template <typename T, typename scalar_t>
__device__ inline RotatedRoi<T> load_rotated_roi(const scalar_t* roi, double spatial_scale,
                                                 const RotatedPoolShape& s) {
  return make_rotated_roi(static_cast<T>(roi[1]), static_cast<T>(roi[2]), static_cast<T>(roi[3]),
                          static_cast<T>(roi[4]), static_cast<T>(roi[5]), static_cast<T>(spatial_scale),
                          s.pooled_height, s.pooled_width, s.sampling_ratio, s.aligned);
}

template <typename scalar_t, bool kChannelsLast>
__global__ void roi_align_rotated_forward_kernel_cuda(const scalar_t* __restrict__ input, StridesNCHW in,
                                                      const scalar_t* __restrict__ rois, double spatial_scale,
                                                      RotatedPoolShape s, int64_t total, scalar_t* __restrict__ out) {
  using acc_t = at::opmath_type<scalar_t>;
  for (const int64_t idx : grid_stride_range(total)) {
    const PooledIndex p = decode_pooled_index<kChannelsLast>(idx, s.channels, s.pooled_height, s.pooled_width);
    const scalar_t* roi = rois + 6 * p.roi;
    const acc_t b = static_cast<acc_t>(roi[0]);
    acc_t sum = acc_t(0);
    acc_t inv = acc_t(1);
    if (is_batch_index(b, s.batch_size)) {
      const RotatedRoi<acc_t> g = load_rotated_roi<acc_t>(roi, spatial_scale, s);
      inv = roi_align_inv_count(g.ay, g.ax);
      const scalar_t* plane = input + static_cast<int64_t>(b) * in.n + p.channel * in.c;
      for (int64_t iy = 0; iy < g.ay.grid; ++iy) {
        for (int64_t ix = 0; ix < g.ax.grid; ++ix) {
          acc_t y, x;
          rotated_sample_point(g, p.ph, p.pw, iy, ix, &y, &x);
          const RotatedTaps<acc_t> t = rotated_sample_taps(y, x, s.height, s.width);
          for (int q = 0; q < 4; ++q) {
            if (t.weight[q] != acc_t(0)) {
              const int64_t row = t.index[q] / s.width, col = t.index[q] - row * s.width;
              sum += t.weight[q] * static_cast<acc_t>(plane[row * in.h + col * in.w]);
            }
          }
        }
      }
    }
    out[idx] = static_cast<scalar_t>(sum * inv);
  }
}

// grad: [K, C, PH, PW] read through its strides; grad_input: the accumulator, [N, C, H, W] with
// strides acc.
template <typename scalar_t, typename acc_t>
__global__ void roi_align_rotated_backward_kernel_cuda(const scalar_t* __restrict__ grad, StridesNCHW gs,
                                                       const scalar_t* __restrict__ rois, double spatial_scale,
                                                       RotatedPoolShape s, int64_t total, acc_t* __restrict__ grad_input,
                                                       StridesNCHW acc) {
  for (const int64_t idx : grid_stride_range(total)) {
    const PooledIndex p = decode_pooled_index<false>(idx, s.channels, s.pooled_height, s.pooled_width);
    const scalar_t* roi = rois + 6 * p.roi;
    const acc_t b = static_cast<acc_t>(roi[0]);
    if (!is_batch_index(b, s.batch_size)) {
      continue;
    }
    const RotatedRoi<acc_t> g = load_rotated_roi<acc_t>(roi, spatial_scale, s);
    const acc_t gb = static_cast<acc_t>(grad[p.roi * gs.n + p.channel * gs.c + p.ph * gs.h + p.pw * gs.w]) *
                     roi_align_inv_count(g.ay, g.ax);
    if (gb == acc_t(0)) {
      continue;
    }
    acc_t* plane = grad_input + static_cast<int64_t>(b) * acc.n + p.channel * acc.c;
    for (int64_t iy = 0; iy < g.ay.grid; ++iy) {
      for (int64_t ix = 0; ix < g.ax.grid; ++ix) {
        acc_t y, x;
        rotated_sample_point(g, p.ph, p.pw, iy, ix, &y, &x);
        const RotatedTaps<acc_t> t = rotated_sample_taps(y, x, s.height, s.width);
        for (int q = 0; q < 4; ++q) {
          if (t.weight[q] != acc_t(0)) {
            const int64_t row = t.index[q] / s.width, col = t.index[q] - row * s.width;
            gpuAtomicAdd(plane + row * acc.h + col * acc.w, gb * t.weight[q]);
          }
        }
      }
    }
  }
}

at::Tensor roi_align_rotated_forward_cuda(const at::Tensor& input, const at::Tensor& rois_in, double spatial_scale,
                                          int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                          bool aligned) {
  const char* op = "roi_align_rotated";
  TORCH_CHECK_VALUE(input.dim() == 4, op, ": input must be [N, C, H, W], got ", input.sizes());
  check_roi_align_rotated_args(op, rois_in, input, spatial_scale, pooled_height, pooled_width);
  const c10::cuda::CUDAGuard guard(input.device());
  const bool channels_last = use_channels_last(input);
  check_batch_indices_cuda(op, rois_in, input.size(0));
  at::Tensor out = at::empty({rois_in.size(0), input.size(1), pooled_height, pooled_width},
                             input.options().memory_format(memory_format_for(channels_last)));
  if (out.numel() == 0) {
    return out;
  }
  const at::Tensor rois = rois_in.contiguous();
  const RotatedPoolShape shape{input.size(0), input.size(1), input.size(2), input.size(3),
                               pooled_height, pooled_width, sampling_ratio, aligned};
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align_rotated_forward_cuda", [&] {
    auto launch = [&](auto channels_last_tag) {
      constexpr bool kCL = decltype(channels_last_tag)::value;
      roi_align_rotated_forward_kernel_cuda<scalar_t, kCL><<<grid_for(out.numel()), kThreads, 0, stream>>>(
          input.const_data_ptr<scalar_t>(), strides_of(input), rois.const_data_ptr<scalar_t>(), spatial_scale, shape,
          out.numel(), out.mutable_data_ptr<scalar_t>());
    };
    channels_last ? launch(std::true_type{}) : launch(std::false_type{});
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor roi_align_rotated_backward_cuda(const at::Tensor& grad, const at::Tensor& rois_in, double spatial_scale,
                                           int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                           int64_t channels, int64_t height, int64_t width, int64_t sampling_ratio,
                                           bool aligned, bool channels_last) {
  const char* op = "roi_align_rotated_backward";
  check_roi_align_rotated_args(op, rois_in, grad, spatial_scale, pooled_height, pooled_width);
  check_pooled_grad(op, grad, grad, rois_in.size(0), channels, pooled_height, pooled_width);
  const c10::cuda::CUDAGuard guard(grad.device());
  at::globalContext().alertNotDeterministic("roi_align_rotated_backward_cuda");
  check_batch_indices_cuda(op, rois_in, batch_size);
  const at::Tensor rois = rois_in.contiguous();
  const RotatedPoolShape shape{batch_size, channels, height, width, pooled_height, pooled_width, sampling_ratio,
                               aligned};
  const auto format = memory_format_for(channels_last);
  at::Tensor grad_input;
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "roi_align_rotated_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor buffer = at::zeros({batch_size, channels, height, width},
                                  grad.options().dtype(c10::CppTypeToScalarType<acc_t>::value).memory_format(format));
    if (grad.numel() > 0 && buffer.numel() > 0) {
      roi_align_rotated_backward_kernel_cuda<scalar_t, acc_t><<<grid_for(grad.numel()), kThreads, 0, stream>>>(
          grad.const_data_ptr<scalar_t>(), strides_of(grad), rois.const_data_ptr<scalar_t>(), spatial_scale, shape,
          grad.numel(), buffer.mutable_data_ptr<acc_t>(), strides_of(buffer));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    grad_input = buffer.to(grad.scalar_type()).contiguous(format);
  });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CUDA, m) {
  m.impl("roi_align_rotated", &roi_align_rotated_forward_cuda);
  m.impl("roi_align_rotated_backward", &roi_align_rotated_backward_cuda);
}

}  // namespace roiops
