// Pairwise IoU of two box sets on CUDA: one thread per output element, grid-stride, 64-bit indices
// (N * M passes 2^31 at 50k x 50k boxes).

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

template <typename scalar_t>
__global__ void box_iou_kernel_cuda(const scalar_t* __restrict__ b1, const scalar_t* __restrict__ b2,
                                    scalar_t* __restrict__ out, int64_t n, int64_t m) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = n * m;
  for (const int64_t idx : grid_stride_range(total)) {
    const int64_t i = idx / m;
    const int64_t j = idx - i * m;
    const acc_t ax1 = b1[4 * i], ay1 = b1[4 * i + 1], ax2 = b1[4 * i + 2], ay2 = b1[4 * i + 3];
    const acc_t bx1 = b2[4 * j], by1 = b2[4 * j + 1], bx2 = b2[4 * j + 2], by2 = b2[4 * j + 3];
    out[idx] = static_cast<scalar_t>(box_iou_with_areas(ax1, ay1, ax2, ay2, box_area(ax1, ay1, ax2, ay2),
                                                        bx1, by1, bx2, by2, box_area(bx1, by1, bx2, by2)));
  }
}

at::Tensor box_iou_cuda(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  TORCH_CHECK(boxes1.dim() == 2 && boxes1.size(1) == 4, "box_iou: boxes1 must be [N, 4]");
  TORCH_CHECK(boxes2.dim() == 2 && boxes2.size(1) == 4, "box_iou: boxes2 must be [M, 4]");
  TORCH_CHECK(boxes1.scalar_type() == boxes2.scalar_type(), "box_iou: boxes1 and boxes2 dtypes differ");
  TORCH_CHECK(boxes1.device() == boxes2.device(), "box_iou: boxes1 and boxes2 are on different devices");
  const c10::cuda::CUDAGuard guard(boxes1.device());
  const at::Tensor b1 = boxes1.contiguous();
  const at::Tensor b2 = boxes2.contiguous();
  at::Tensor out = at::empty({b1.size(0), b2.size(0)}, b1.options());
  if (out.numel() == 0) {
    return out;
  }
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b1.scalar_type(), "box_iou_cuda", [&] {
    box_iou_kernel_cuda<scalar_t><<<grid_for(out.numel()), kThreads, 0, stream>>>(
        b1.const_data_ptr<scalar_t>(), b2.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
        b1.size(0), b2.size(0));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CUDA, m) {
  m.impl("box_iou", &box_iou_cuda);
}

}  // namespace roiops
