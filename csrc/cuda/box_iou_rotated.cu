// IoU of rotated boxes on CUDA: one thread per output element (all pairs [N, M], or matching rows
// [N] when aligned), grid-stride, 64-bit indices. The geometry is common/rotated_box_geometry.h's,
// in the op-math type (float32 for float32 and the half types, float64 for float64); the CPU kernel
// computes in float64, so the two agree to float32 rounding for float32 boxes.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/rotated_box_geometry.h"
#include "common/rotated_checks.h"
#include "cuda/launch.cuh"

namespace roiops {
namespace {

template <typename scalar_t>
__global__ void box_iou_rotated_kernel_cuda(const scalar_t* __restrict__ b1, const scalar_t* __restrict__ b2,
                                            scalar_t* __restrict__ out, int64_t n, int64_t m, bool aligned) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = aligned ? n : n * m;
  for (const int64_t idx : grid_stride_range(total)) {
    const int64_t i = aligned ? idx : idx / m;
    const int64_t j = aligned ? idx : idx - i * m;
    const RotatedBox<acc_t> a = load_rotated_box<acc_t>(b1, i);
    const RotatedBox<acc_t> b = load_rotated_box<acc_t>(b2, j);
    out[idx] = static_cast<scalar_t>(rotated_box_iou(a, b));
  }
}

at::Tensor box_iou_rotated_cuda(const at::Tensor& boxes1, const at::Tensor& boxes2, bool aligned) {
  check_box_iou_rotated_args(boxes1, boxes2, aligned);
  const c10::cuda::CUDAGuard guard(boxes1.device());
  const at::Tensor b1 = boxes1.contiguous();
  const at::Tensor b2 = boxes2.contiguous();
  const int64_t n = b1.size(0), m = b2.size(0);
  at::Tensor out = aligned ? at::empty({n}, b1.options()) : at::empty({n, m}, b1.options());
  if (out.numel() == 0) {
    return out;
  }
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b1.scalar_type(), "box_iou_rotated_cuda", [&] {
    box_iou_rotated_kernel_cuda<scalar_t><<<grid_for(out.numel()), kThreads, 0, stream>>>(
        b1.const_data_ptr<scalar_t>(), b2.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), n, m,
        aligned);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CUDA, m) {
  m.impl("box_iou_rotated", &box_iou_rotated_cuda);
}

}  // namespace roiops
