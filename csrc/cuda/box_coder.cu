// R-CNN box encoding and decoding on CUDA (the steps are in common/box_coding.h): one thread per
// box (encode) or per box-class pair (decode), grid-stride, 64-bit indices.
//
// exp and log are the CUDA math library's expf / logf (exp / log in double), computed in acc_t as
// torch's own CUDA kernels do, so the results are bit-identical to the element-wise PyTorch formula
// on the GPU. They are not always those of the CPU kernels (torch's CPU exp and log are different
// implementations); the arithmetic around them is.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <array>
#include <limits>

#include "common/box_coding.h"
#include "common/checks.h"
#include "cuda/postprocess.cuh"

namespace roiops {
namespace {

using coding::AxisFrame;
using coding::round_to;

template <typename acc_t>
__device__ inline acc_t exp_of(acc_t x) {
  if constexpr (std::is_same_v<acc_t, float>) {
    return ::expf(x);
  } else {
    return ::exp(x);
  }
}

template <typename acc_t>
__device__ inline acc_t log_of(acc_t x) {
  if constexpr (std::is_same_v<acc_t, float>) {
    return ::logf(x);
  } else {
    return ::log(x);
  }
}

// The weights as the PyTorch formula held them: a tensor of the boxes' dtype.
template <typename scalar_t, typename acc_t>
struct Weights {
  acc_t x, y, w, h;
};

template <typename scalar_t, typename acc_t>
Weights<scalar_t, acc_t> weights_as(const std::array<double, 4>& w) {
  return {static_cast<acc_t>(static_cast<scalar_t>(w[0])), static_cast<acc_t>(static_cast<scalar_t>(w[1])),
          static_cast<acc_t>(static_cast<scalar_t>(w[2])), static_cast<acc_t>(static_cast<scalar_t>(w[3]))};
}

int64_t grid_for(int64_t work, int threads) {
  return std::max<int64_t>(1, std::min<int64_t>((work + threads - 1) / threads, 65535LL * 32));
}

template <typename scalar_t>
__global__ void box_encode_kernel_cuda(const scalar_t* __restrict__ gt, const scalar_t* __restrict__ proposals,
                                       scalar_t* __restrict__ out, int64_t n,
                                       Weights<scalar_t, at::opmath_type<scalar_t>> w) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const scalar_t* p = proposals + 4 * i;
    const scalar_t* g = gt + 4 * i;
    const AxisFrame<scalar_t, acc_t> px(p[0], p[2]), py(p[1], p[3]);
    const AxisFrame<scalar_t, acc_t> gx(g[0], g[2]), gy(g[1], g[3]);
    const acc_t rw = coding::encode_size_ratio<scalar_t>(gx.size, px.size);
    const acc_t rh = coding::encode_size_ratio<scalar_t>(gy.size, py.size);
    out[4 * i + 0] = static_cast<scalar_t>(coding::encode_centre<scalar_t>(gx.centre, px.centre, w.x, px.size));
    out[4 * i + 1] = static_cast<scalar_t>(coding::encode_centre<scalar_t>(gy.centre, py.centre, w.y, py.size));
    out[4 * i + 2] = static_cast<scalar_t>(coding::encode_log_size<scalar_t>(round_to<scalar_t>(log_of(rw)), w.w));
    out[4 * i + 3] = static_cast<scalar_t>(coding::encode_log_size<scalar_t>(round_to<scalar_t>(log_of(rh)), w.h));
  }
}

template <typename scalar_t>
__global__ void box_decode_kernel_cuda(const scalar_t* __restrict__ codes, const scalar_t* __restrict__ boxes,
                                       scalar_t* __restrict__ out, int64_t total, int64_t classes,
                                       Weights<scalar_t, at::opmath_type<scalar_t>> w,
                                       at::opmath_type<scalar_t> clip, at::opmath_type<scalar_t> low,
                                       at::opmath_type<scalar_t> max_y, at::opmath_type<scalar_t> max_x) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < total;
       k += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const scalar_t* b = boxes + 4 * (k / classes);
    const scalar_t* d = codes + 4 * k;
    const AxisFrame<scalar_t, acc_t> fx(b[0], b[2]), fy(b[1], b[3]);
    const acc_t sw = round_to<scalar_t>(exp_of(coding::decode_log_size<scalar_t>(acc_t(d[2]), w.w, clip)));
    const acc_t sh = round_to<scalar_t>(exp_of(coding::decode_log_size<scalar_t>(acc_t(d[3]), w.h, clip)));
    acc_t corners[4];
    coding::decode_corners<scalar_t>(acc_t(d[0]), acc_t(d[1]), w.x, w.y, sw, sh, fx, fy, low, max_x, max_y, corners);
    for (int c = 0; c < 4; ++c) {
      out[4 * k + c] = static_cast<scalar_t>(corners[c]);
    }
  }
}

at::Tensor box_encode_cuda(const at::Tensor& reference_boxes, const at::Tensor& proposals,
                           at::ArrayRef<double> weights) {
  const std::array<double, 4> w = check_box_encode_args(reference_boxes, proposals, weights);
  const c10::cuda::CUDAGuard guard(reference_boxes.device());
  const at::Tensor gt = reference_boxes.contiguous();
  const at::Tensor p = proposals.contiguous();
  at::Tensor out = at::empty_like(gt);
  if (out.numel() == 0) {
    return out;
  }
  const int threads = 256;
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gt.scalar_type(), "box_encode_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    box_encode_kernel_cuda<scalar_t><<<grid_for(gt.size(0), threads), threads, 0, stream>>>(
        gt.const_data_ptr<scalar_t>(), p.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
        gt.size(0), weights_as<scalar_t, acc_t>(w));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

// Also called directly by the detection post-processing drivers (cuda/postprocess.cuh).
at::Tensor box_decode_cuda(const at::Tensor& rel_codes, const at::Tensor& boxes, at::ArrayRef<double> weights,
                           double bbox_xform_clip, at::OptionalIntArrayRef image_size) {
  const std::array<double, 4> w = check_box_decode_args(rel_codes, boxes, weights, image_size);
  const c10::cuda::CUDAGuard guard(rel_codes.device());
  const at::Tensor codes = rel_codes.contiguous();
  const at::Tensor b = boxes.contiguous();
  at::Tensor out = at::empty_like(codes);
  if (out.numel() == 0) {
    return out;
  }
  const bool clip_to_image = image_size.has_value();
  const double height = clip_to_image ? static_cast<double>((*image_size)[0]) : 0.0;
  const double width = clip_to_image ? static_cast<double>((*image_size)[1]) : 0.0;
  const int64_t total = codes.numel() / 4;
  const int threads = 256;
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, codes.scalar_type(), "box_decode_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    // Infinite bounds make the clamp the identity (NaN included) when not clipping to the image.
    const acc_t inf = std::numeric_limits<acc_t>::infinity();
    box_decode_kernel_cuda<scalar_t><<<grid_for(total, threads), threads, 0, stream>>>(
        codes.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), total,
        codes.size(1) / 4, weights_as<scalar_t, acc_t>(w), static_cast<acc_t>(bbox_xform_clip),
        clip_to_image ? acc_t(0) : -inf, clip_to_image ? static_cast<acc_t>(height) : inf,
        clip_to_image ? static_cast<acc_t>(width) : inf);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

TORCH_LIBRARY_IMPL(roiops, CUDA, m) {
  m.impl("box_encode", &box_encode_cuda);
  m.impl("box_decode", &box_decode_cuda);
}

}  // namespace roiops
