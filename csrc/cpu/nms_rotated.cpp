// Non-maximum suppression of rotated boxes on the CPU: nms_rotated and batched_nms_rotated.
//
// The rules are nms.cpp's: rank by decreasing score, NaN scores after every number, ties to the
// lower index (cpu/nms_rank.h); a box is dropped when a kept box of higher rank overlaps it with
// IoU > iou_threshold; a box of area 0 (or with a non-finite value) has IoU 0 with everything, so
// it is kept and suppresses nothing; iou_threshold < 0 keeps only the top-ranked box. IoU is
// common/rotated_box_geometry.h's, in float64 for every input dtype (as box_iou_rotated_cpu).
//
// Work: each candidate asks "does a kept box suppress me?", and only kept boxes that can overlap
// it are asked: kept boxes are filed by centre in a uniform grid, and a candidate scans only the
// cells whose centres lie within reach of its own (its bounds' half extent plus the largest one),
// then rejects by bounds and by area ratio (IoU <= min(area) / max(area)) before clipping. The
// result is the textbook greedy result; only the work differs.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "common/rotated_checks.h"
#include "common/rotated_box_geometry.h"
#include "cpu/centre_grid.h"
#include "cpu/nms_rank.h"
#include "cpu/run_tasks.h"

namespace roiops {
namespace cpu {
namespace {

using geom_t = double;
using Box = RotatedBox<geom_t>;

// IoU(kept, b) > threshold (threshold >= 0, both with area > 0), cheap rejections first.
inline bool overlaps_above(const Box& kept, const Box& b, geom_t threshold) {
  if (!rotated_bounds_overlap(kept, b)) {
    return false;
  }
  const geom_t lo = std::min(kept.area, b.area), hi = std::max(kept.area, b.area);
  if (lo <= threshold * hi) {
    return false;  // IoU <= lo / hi <= threshold
  }
  return rotated_box_iou(kept, b) > threshold;
}

// Kept boxes filed by centre (cpu/centre_grid.h). Bounds overlap needs |centre difference| <
// ex_b + ex_kept <= ex_b + max_ex (and the same in y), so a candidate scans the cells within that
// reach; the slack covers the rounding of the cell arithmetic.
class KeptRotatedGrid {
 public:
  KeptRotatedGrid(const Box* boxes, int64_t n) {
    std::vector<double> centre_x, centre_y, reach;
    for (int64_t i = 0; i < n; ++i) {
      const Box& b = boxes[i];
      if (b.area > 0) {
        max_ex_ = std::max(max_ex_, b.ex);
        max_ey_ = std::max(max_ey_, b.ey);
        centre_x.push_back(b.cx);
        centre_y.push_back(b.cy);
        reach.push_back(2.0 * std::max(b.ex, b.ey));
      }
    }
    grid_ = CentreGrid<Box>(centre_x, centre_y, std::move(reach));
  }

  // True when a kept box overlaps b (area > 0) with IoU > threshold.
  bool suppresses(const Box& b, geom_t threshold) const {
    const double rx = (b.ex + max_ex_) * (1 + 1e-9), ry = (b.ey + max_ey_) * (1 + 1e-9);
    return grid_.any_near(b.cx, b.cy, rx, ry, [&](const Box& kept) { return overlaps_above(kept, b, threshold); });
  }

  void insert(const Box& b) {
    grid_.insert(b, b.cx, b.cy);
  }

 private:
  double max_ex_ = 0, max_ey_ = 0;
  CentreGrid<Box> grid_;
};

// Below this many boxes a flat scan of the kept boxes beats building a grid.
constexpr int64_t kGridMinBoxes = 48;

// Greedy NMS over boxes already in rank order; keep[r] = 1 for each kept rank r.
void greedy_nms_rotated(const Box* boxes, int64_t n, geom_t threshold, uint8_t* keep) {
  if (n == 0) {
    return;
  }
  if (!(threshold >= 0)) {
    // Every IoU (>= 0) exceeds a negative threshold: the top box suppresses all the others.
    std::memset(keep, 0, n);
    keep[0] = 1;
    return;
  }
  if (n < kGridMinBoxes) {
    std::vector<const Box*> kept;
    for (int64_t r = 0; r < n; ++r) {
      const Box& b = boxes[r];
      bool suppressed = false;
      if (b.area > 0) {
        for (const Box* k : kept) {
          if (overlaps_above(*k, b, threshold)) {
            suppressed = true;
            break;
          }
        }
      }
      keep[r] = suppressed ? 0 : 1;
      if (!suppressed && b.area > 0) {
        kept.push_back(&b);
      }
    }
    return;
  }
  KeptRotatedGrid grid(boxes, n);
  for (int64_t r = 0; r < n; ++r) {
    const Box& b = boxes[r];
    if (!(b.area > 0)) {
      keep[r] = 1;
      continue;
    }
    const bool suppressed = grid.suppresses(b, threshold);
    keep[r] = suppressed ? 0 : 1;
    if (!suppressed) {
      grid.insert(b);
    }
  }
}

template <typename scalar_t>
std::vector<Box> load_ranked(const at::Tensor& boxes, const std::vector<int64_t>& positions) {
  const scalar_t* b = boxes.const_data_ptr<scalar_t>();
  std::vector<Box> out(positions.size());
  for (size_t r = 0; r < positions.size(); ++r) {
    out[r] = load_rotated_box<geom_t>(b, positions[r]);
  }
  return out;
}

at::Tensor nms_rotated_cpu(const at::Tensor& boxes_in, const at::Tensor& scores_in, double iou_threshold) {
  check_nms_rotated_args("nms_rotated", boxes_in, scores_in, at::Tensor());
  const at::Tensor boxes = boxes_in.contiguous();
  const at::Tensor scores = scores_in.contiguous();
  const int64_t n = boxes.size(0);
  std::vector<int64_t> order;
  std::vector<uint8_t> keep(n, 0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes.scalar_type(), "nms_rotated_cpu", [&] {
    order = rank_by_score(scores.const_data_ptr<scalar_t>(), n);
    const std::vector<Box> ranked = load_ranked<scalar_t>(boxes, order);
    greedy_nms_rotated(ranked.data(), n, iou_threshold, keep.data());
  });
  return kept_indices(order, keep, boxes);
}

at::Tensor batched_nms_rotated_cpu(const at::Tensor& boxes_in, const at::Tensor& scores_in,
                                   const at::Tensor& idxs_in, double iou_threshold) {
  check_nms_rotated_args("batched_nms_rotated", boxes_in, scores_in, idxs_in);
  const at::Tensor boxes = boxes_in.contiguous();
  const at::Tensor scores = scores_in.contiguous();
  const at::Tensor idxs = idxs_in.contiguous();
  const int64_t n = boxes.size(0);
  const int64_t* category = idxs.const_data_ptr<int64_t>();
  std::vector<int64_t> order;
  std::vector<uint8_t> keep(n, 0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes.scalar_type(), "batched_nms_rotated_cpu", [&] {
    order = rank_by_score(scores.const_data_ptr<scalar_t>(), n);
    if (n == 0) {
      return;
    }
    // Rank positions grouped by category, each group still in rank order.
    std::vector<int64_t> grouped(n);
    std::iota(grouped.begin(), grouped.end(), 0);
    std::stable_sort(grouped.begin(), grouped.end(),
                     [&](int64_t a, int64_t b) { return category[order[a]] < category[order[b]]; });
    std::vector<int64_t> group_start;
    for (int64_t k = 0; k < n; ++k) {
      if (k == 0 || category[order[grouped[k]]] != category[order[grouped[k - 1]]]) {
        group_start.push_back(k);
      }
    }
    group_start.push_back(n);
    const int64_t num_groups = static_cast<int64_t>(group_start.size()) - 1;
    std::vector<int64_t> positions(n);
    for (int64_t k = 0; k < n; ++k) {
      positions[k] = order[grouped[k]];
    }
    const std::vector<Box> ranked = load_ranked<scalar_t>(boxes, positions);
    std::vector<uint8_t> keep_grouped(n, 0);
    // Categories are independent, of any sizes (run_tasks). Each category's result is computed
    // by one thread in rank order, so the result does not depend on the thread count.
    run_tasks(num_groups, at::get_num_threads(), [&](int64_t g) {
      const int64_t s = group_start[g], e = group_start[g + 1];
      greedy_nms_rotated(ranked.data() + s, e - s, iou_threshold, keep_grouped.data() + s);
    });
    for (int64_t k = 0; k < n; ++k) {
      keep[grouped[k]] = keep_grouped[k];
    }
  });
  return kept_indices(order, keep, boxes);
}

}  // namespace
}  // namespace cpu

TORCH_LIBRARY_IMPL(roiops, CPU, m) {
  m.impl("nms_rotated", &cpu::nms_rotated_cpu);
  m.impl("batched_nms_rotated", &cpu::batched_nms_rotated_cpu);
}

}  // namespace roiops
