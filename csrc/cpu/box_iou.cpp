// Pairwise IoU of two box sets on the CPU, and its family (generalized, distance, complete IoU):
// one driver, the per-pair formula chosen at compile time (common/box_geometry.h).
//
// boxes2 is first transposed into structure-of-arrays form (x1[], y1[], ..., with the per-box terms
// area, centre and aspect angle computed once per box, not once per pair), so the inner loop over
// it is a straight, vectorizable stream with no transcendental call; rows of the output are split
// across threads, each row written by exactly one thread.

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

template <int kind, typename scalar_t, typename acc_t>
void box_iou_family_kernel_cpu(const at::Tensor& boxes1, const at::Tensor& boxes2, at::Tensor& out,
                               acc_t eps) {
  const int64_t n = boxes1.size(0);
  const int64_t m = boxes2.size(0);
  const scalar_t* b1 = boxes1.const_data_ptr<scalar_t>();
  const scalar_t* b2 = boxes2.const_data_ptr<scalar_t>();
  scalar_t* o = out.mutable_data_ptr<scalar_t>();
  constexpr bool with_angle = kind == kCompleteBoxIou;
  constexpr bool with_centres = kind == kDistanceBoxIou || kind == kCompleteBoxIou;

  std::vector<acc_t> soa(8 * m);
  acc_t* x1 = soa.data();
  acc_t* y1 = x1 + m;
  acc_t* x2 = y1 + m;
  acc_t* y2 = x2 + m;
  acc_t* area = y2 + m;
  acc_t* cx = area + m;
  acc_t* cy = cx + m;
  acc_t* angle = cy + m;
  for (int64_t j = 0; j < m; ++j) {
    const BoxTerms<acc_t> t = box_terms<acc_t>(b2[4 * j + 0], b2[4 * j + 1], b2[4 * j + 2],
                                               b2[4 * j + 3], with_angle);
    x1[j] = t.x1;
    y1[j] = t.y1;
    x2[j] = t.x2;
    y2[j] = t.y2;
    area[j] = t.area;
    if constexpr (with_centres) {
      cx[j] = t.cx;
      cy[j] = t.cy;
    }
    if constexpr (with_angle) {
      angle[j] = t.angle;
    }
  }

  // Rows are cheap (m values each), so hand each thread a block of rows large enough to amortize.
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(m, 1));
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const BoxTerms<acc_t> a = box_terms<acc_t>(b1[4 * i + 0], b1[4 * i + 1], b1[4 * i + 2],
                                                 b1[4 * i + 3], with_angle);
      scalar_t* row = o + i * m;
#pragma omp simd
      for (int64_t j = 0; j < m; ++j) {
        // Only the terms this kind reads are loaded: the rest stay out of the cache.
        const BoxTerms<acc_t> b{x1[j], y1[j], x2[j], y2[j], area[j],
                                with_centres ? cx[j] : acc_t(0), with_centres ? cy[j] : acc_t(0),
                                with_angle ? angle[j] : acc_t(0)};
        row[j] = static_cast<scalar_t>(box_iou_family_pair<kind>(a, b, eps));
      }
    }
  });
}

template <int kind>
void box_iou_family_dispatch_cpu(const at::Tensor& b1, const at::Tensor& b2, at::Tensor& out, double eps) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b1.scalar_type(), "box_iou_family_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    box_iou_family_kernel_cpu<kind, scalar_t, acc_t>(b1, b2, out, static_cast<acc_t>(eps));
  });
}

at::Tensor box_iou_family_cpu(const at::Tensor& boxes1, const at::Tensor& boxes2, int64_t kind, double eps) {
  // The Python wrappers validate; these checks only guard direct torch.ops calls.
  TORCH_CHECK(boxes1.dim() == 2 && boxes1.size(1) == 4, "box_iou_family: boxes1 must be [N, 4]");
  TORCH_CHECK(boxes2.dim() == 2 && boxes2.size(1) == 4, "box_iou_family: boxes2 must be [M, 4]");
  TORCH_CHECK(boxes1.scalar_type() == boxes2.scalar_type(), "box_iou_family: boxes1 and boxes2 dtypes differ");
  TORCH_CHECK_VALUE(kind >= kGeneralizedBoxIou && kind <= kCompleteBoxIou,
                    "box_iou_family: kind must be 1 (generalized), 2 (distance) or 3 (complete), got ", kind);
  const at::Tensor b1 = boxes1.contiguous();
  const at::Tensor b2 = boxes2.contiguous();
  at::Tensor out = at::empty({b1.size(0), b2.size(0)}, b1.options());
  if (out.numel() == 0) {
    return out;
  }
  switch (kind) {
    case kGeneralizedBoxIou:
      box_iou_family_dispatch_cpu<kGeneralizedBoxIou>(b1, b2, out, eps);
      break;
    case kDistanceBoxIou:
      box_iou_family_dispatch_cpu<kDistanceBoxIou>(b1, b2, out, eps);
      break;
    default:
      box_iou_family_dispatch_cpu<kCompleteBoxIou>(b1, b2, out, eps);
      break;
  }
  return out;
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
  box_iou_family_dispatch_cpu<kBoxIou>(b1, b2, out, 0.0);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CPU, m) {
  m.impl("box_iou", &box_iou_cpu);
  m.impl("box_iou_family", &box_iou_family_cpu);
}

}  // namespace roiops
