// Pairwise IoU of two box sets on CUDA, and its family (generalized, distance, complete IoU): one
// thread per output element, grid-stride, 64-bit indices (N * M passes 2^31 at 50k x 50k boxes);
// the per-pair formula is chosen at compile time (common/box_geometry.h).

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/box_geometry.h"
#include "cuda/launch.cuh"

namespace roiops {
namespace {

template <int kind, typename scalar_t>
__global__ void box_iou_family_kernel_cuda(const scalar_t* __restrict__ b1, const scalar_t* __restrict__ b2,
                                           scalar_t* __restrict__ out, int64_t n, int64_t m,
                                           at::opmath_type<scalar_t> eps) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr bool with_angle = kind == kCompleteBoxIou;
  const int64_t total = n * m;
  for (const int64_t idx : grid_stride_range(total)) {
    const int64_t i = idx / m;
    const int64_t j = idx - i * m;
    const BoxTerms<acc_t> a =
        box_terms<acc_t>(b1[4 * i], b1[4 * i + 1], b1[4 * i + 2], b1[4 * i + 3], with_angle);
    const BoxTerms<acc_t> b =
        box_terms<acc_t>(b2[4 * j], b2[4 * j + 1], b2[4 * j + 2], b2[4 * j + 3], with_angle);
    out[idx] = static_cast<scalar_t>(box_iou_family_pair<kind>(a, b, eps));
  }
}

template <int kind>
void launch_box_iou_family_cuda(const at::Tensor& b1, const at::Tensor& b2, at::Tensor& out, double eps) {
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b1.scalar_type(), "box_iou_family_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    box_iou_family_kernel_cuda<kind, scalar_t><<<grid_for(out.numel()), kThreads, 0, stream>>>(
        b1.const_data_ptr<scalar_t>(), b2.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
        b1.size(0), b2.size(0), static_cast<acc_t>(eps));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Argument checks, device guard, contiguous copies and the empty-output early return shared by
// box_iou and box_iou_family; returns false when there is nothing to compute.
bool prepare_box_pair_cuda(const char* op, const at::Tensor& boxes1, const at::Tensor& boxes2,
                           at::Tensor& b1, at::Tensor& b2, at::Tensor& out) {
  TORCH_CHECK(boxes1.dim() == 2 && boxes1.size(1) == 4, op, ": boxes1 must be [N, 4]");
  TORCH_CHECK(boxes2.dim() == 2 && boxes2.size(1) == 4, op, ": boxes2 must be [M, 4]");
  TORCH_CHECK(boxes1.scalar_type() == boxes2.scalar_type(), op, ": boxes1 and boxes2 dtypes differ");
  TORCH_CHECK(boxes1.device() == boxes2.device(), op, ": boxes1 and boxes2 are on different devices");
  b1 = boxes1.contiguous();
  b2 = boxes2.contiguous();
  out = at::empty({b1.size(0), b2.size(0)}, b1.options());
  return out.numel() != 0;
}

at::Tensor box_iou_cuda(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  const c10::cuda::CUDAGuard guard(boxes1.device());
  at::Tensor b1, b2, out;
  if (prepare_box_pair_cuda("box_iou", boxes1, boxes2, b1, b2, out)) {
    launch_box_iou_family_cuda<kBoxIou>(b1, b2, out, 0.0);
  }
  return out;
}

at::Tensor box_iou_family_cuda(const at::Tensor& boxes1, const at::Tensor& boxes2, int64_t kind, double eps) {
  TORCH_CHECK_VALUE(kind >= kGeneralizedBoxIou && kind <= kCompleteBoxIou,
                    "box_iou_family: kind must be 1 (generalized), 2 (distance) or 3 (complete), got ", kind);
  const c10::cuda::CUDAGuard guard(boxes1.device());
  at::Tensor b1, b2, out;
  if (!prepare_box_pair_cuda("box_iou_family", boxes1, boxes2, b1, b2, out)) {
    return out;
  }
  switch (kind) {
    case kGeneralizedBoxIou:
      launch_box_iou_family_cuda<kGeneralizedBoxIou>(b1, b2, out, eps);
      break;
    case kDistanceBoxIou:
      launch_box_iou_family_cuda<kDistanceBoxIou>(b1, b2, out, eps);
      break;
    default:
      launch_box_iou_family_cuda<kCompleteBoxIou>(b1, b2, out, eps);
      break;
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CUDA, m) {
  m.impl("box_iou", &box_iou_cuda);
  m.impl("box_iou_family", &box_iou_family_cuda);
}

}  // namespace roiops
