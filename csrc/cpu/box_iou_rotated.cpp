// IoU of rotated boxes on the CPU: all pairs of two sets ([N, M]) or matching rows ([N]).
//
// Every box is prepared once (sines, cosines, axis-aligned bounds, area: common/
// rotated_box_geometry.h); a pair whose bounds do not overlap is 0 without clipping, which is most
// pairs of a realistic image. The geometry runs in float64 for every input dtype (the clipping is
// the expensive part either way) and the IoU is rounded to the input dtype once. Rows are split
// across threads, each output element written by one thread: results do not depend on the thread
// count.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "common/rotated_checks.h"
#include "common/rotated_box_geometry.h"

namespace roiops {
namespace {

using geom_t = double;

template <typename scalar_t>
std::vector<RotatedBox<geom_t>> prepare_boxes(const at::Tensor& boxes) {
  const int64_t n = boxes.size(0);
  const scalar_t* b = boxes.const_data_ptr<scalar_t>();
  std::vector<RotatedBox<geom_t>> out(n);
  for (int64_t i = 0; i < n; ++i) {
    out[i] = load_rotated_box<geom_t>(b, i);
  }
  return out;
}

at::Tensor box_iou_rotated_cpu(const at::Tensor& boxes1_in, const at::Tensor& boxes2_in, bool aligned) {
  check_box_iou_rotated_args(boxes1_in, boxes2_in, aligned);
  const at::Tensor boxes1 = boxes1_in.contiguous();
  const at::Tensor boxes2 = boxes2_in.contiguous();
  const int64_t n = boxes1.size(0), m = boxes2.size(0);
  at::Tensor out = aligned ? at::empty({n}, boxes1.options()) : at::empty({n, m}, boxes1.options());
  if (out.numel() == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes1.scalar_type(), "box_iou_rotated_cpu", [&] {
    const std::vector<RotatedBox<geom_t>> a = prepare_boxes<scalar_t>(boxes1);
    const std::vector<RotatedBox<geom_t>> b = prepare_boxes<scalar_t>(boxes2);
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    if (aligned) {
      at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          o[i] = static_cast<scalar_t>(rotated_box_iou(a[i], b[i]));
        }
      });
      return;
    }
    const int64_t grain = std::max<int64_t>(1, 4096 / m);
    at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        scalar_t* row = o + i * m;
        const RotatedBox<geom_t>& ai = a[i];
        for (int64_t j = 0; j < m; ++j) {
          row[j] = static_cast<scalar_t>(rotated_box_iou(ai, b[j]));
        }
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CPU, m) {
  m.impl("box_iou_rotated", &box_iou_rotated_cpu);
}

}  // namespace roiops
