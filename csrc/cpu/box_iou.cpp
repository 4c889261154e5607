// Pairwise IoU of two box sets on the CPU.
//
// boxes2 is first transposed into structure-of-arrays form (x1[], y1[], x2[], y2[], area[]), so
// the inner loop over it is a straight, vectorizable stream; rows of the output are split across
// threads, each row written by exactly one thread.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <vector>

#include "common/box_geometry.h"

namespace roiops {
namespace {

template <typename scalar_t, typename acc_t>
void box_iou_kernel_cpu(const at::Tensor& boxes1, const at::Tensor& boxes2, at::Tensor& out) {
  const int64_t n = boxes1.size(0);
  const int64_t m = boxes2.size(0);
  const scalar_t* b1 = boxes1.const_data_ptr<scalar_t>();
  const scalar_t* b2 = boxes2.const_data_ptr<scalar_t>();
  scalar_t* o = out.mutable_data_ptr<scalar_t>();

  std::vector<acc_t> soa(5 * m);
  acc_t* x1 = soa.data();
  acc_t* y1 = x1 + m;
  acc_t* x2 = y1 + m;
  acc_t* y2 = x2 + m;
  acc_t* area = y2 + m;
  for (int64_t j = 0; j < m; ++j) {
    x1[j] = static_cast<acc_t>(b2[4 * j + 0]);
    y1[j] = static_cast<acc_t>(b2[4 * j + 1]);
    x2[j] = static_cast<acc_t>(b2[4 * j + 2]);
    y2[j] = static_cast<acc_t>(b2[4 * j + 3]);
    area[j] = box_area(x1[j], y1[j], x2[j], y2[j]);
  }

  // Rows are cheap (m IoUs each), so hand each thread a block of rows large enough to amortize.
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(m, 1));
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const acc_t ax1 = static_cast<acc_t>(b1[4 * i + 0]);
      const acc_t ay1 = static_cast<acc_t>(b1[4 * i + 1]);
      const acc_t ax2 = static_cast<acc_t>(b1[4 * i + 2]);
      const acc_t ay2 = static_cast<acc_t>(b1[4 * i + 3]);
      const acc_t area_a = box_area(ax1, ay1, ax2, ay2);
      scalar_t* row = o + i * m;
#pragma omp simd
      for (int64_t j = 0; j < m; ++j) {
        row[j] = static_cast<scalar_t>(
            box_iou_with_areas(ax1, ay1, ax2, ay2, area_a, x1[j], y1[j], x2[j], y2[j], area[j]));
      }
    }
  });
}

at::Tensor box_iou_cpu(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  // The Python wrapper validates; these checks only guard direct torch.ops calls.
  TORCH_CHECK(boxes1.dim() == 2 && boxes1.size(1) == 4, "box_iou: boxes1 must be [N, 4]");
  TORCH_CHECK(boxes2.dim() == 2 && boxes2.size(1) == 4, "box_iou: boxes2 must be [M, 4]");
  TORCH_CHECK(boxes1.scalar_type() == boxes2.scalar_type(), "box_iou: boxes1 and boxes2 dtypes differ");
  const at::Tensor b1 = boxes1.contiguous();
  const at::Tensor b2 = boxes2.contiguous();
  at::Tensor out = at::empty({b1.size(0), b2.size(0)}, b1.options());
  if (out.numel() == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b1.scalar_type(), "box_iou_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    box_iou_kernel_cpu<scalar_t, acc_t>(b1, b2, out);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CPU, m) {
  m.impl("box_iou", &box_iou_cpu);
}

}  // namespace roiops
