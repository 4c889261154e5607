// Greedy NMS on the CPU, shared by the suppression ops (nms.cpp) and the fused detection
// post-processing ops (rpn_proposals.cpp, detections_from_box_head.cpp).
//
// Greedy NMS keeps a box iff no already-kept box of higher rank overlaps it with IoU above the
// threshold. Written that way round (each candidate asks "does a kept box suppress me?") only
// kept boxes are ever compared, and only kept boxes whose centres are close enough for IoU > t:
// kept boxes are filed by centre in a uniform grid, and a candidate scans only the cells within
// that distance of its own centre (centre_reach: (1 - t) box widths for t >= 1/2). The result is
// exactly the textbook (and torchvision's) greedy result; only the work differs.
//
// Rank: decreasing score, NaN scores after every number, ties broken by the lower index
// (cpu/nms_rank.h, shared with the rotated NMS).
// IoU: box_iou_with_areas from common/box_geometry.h (0 for an empty or NaN box).
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sort.h>
#include <c10/core/ScalarType.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

#include "common/box_geometry.h"
#include "cpu/centre_grid.h"
#include "cpu/nms_rank.h"
#include "cpu/run_tasks.h"

namespace roiops {
namespace greedy_nms {

template <typename acc_t>
struct RankedBox {
  acc_t x1, y1, x2, y2, area;
};

template <typename acc_t>
inline bool box_is_finite(const RankedBox<acc_t>& b) {
  return std::isfinite(b.x1) && std::isfinite(b.y1) && std::isfinite(b.x2) && std::isfinite(b.y2);
}

// IoU(a, b) > threshold, for threshold >= 0. Disjoint boxes (IoU 0, the common case) are rejected
// before the division; otherwise the comparison is the shared IoU's, rounding included.
template <typename acc_t>
inline bool overlaps_above(const RankedBox<acc_t>& a, const RankedBox<acc_t>& b, acc_t threshold) {
  if (!(a.x1 < b.x2 && b.x1 < a.x2 && a.y1 < b.y2 && b.y1 < a.y2)) {
    return false;
  }
  return box_iou_with_areas(a.x1, a.y1, a.x2, a.y2, a.area, b.x1, b.y1, b.x2, b.y2, b.area) > threshold;
}

// How far apart the centres of two boxes with IoU > t can be, as a multiple of the candidate's
// width (per axis; same for heights). IoU > t needs an intersection width iw > t * max(wa, wb)
// (inter > t * union >= t * max(area), and ih <= min(ha, hb)), while two intervals with centre
// distance d overlap by at most (wa + wb) / 2 - d. With wb < wa / t this bounds d by
// (1 - t) * wa for t >= 1/2 and by (1 - t) / (2t) * wa below; at t = 0 only the largest width
// bounds it, d < (wa + w_max) / 2, which is also a bound for every t.
inline double centre_reach(double t) {
  return t >= 0.5 ? 1.0 - t : (t > 0 ? (1.0 - t) / (2.0 * t) : INFINITY);
}

// Kept boxes filed by centre (cpu/centre_grid.h). A candidate scans the cells within reach of its
// centre (centre_reach), widened so that rounding can never hide a suppressor.
template <typename acc_t>
class KeptGrid {
 public:
  KeptGrid(const RankedBox<acc_t>* boxes, int64_t n, double threshold) : reach_factor_(centre_reach(threshold)) {
    // Only boxes that can overlap anything are ever filed. The reach of one depends on the
    // largest sides, so those come first.
    for (int64_t i = 0; i < n; ++i) {
      const auto& b = boxes[i];
      if (can_overlap(b)) {
        max_w_ = std::max<double>(max_w_, b.x2 - b.x1);
        max_h_ = std::max<double>(max_h_, b.y2 - b.y1);
      }
    }
    std::vector<double> centre_x, centre_y, reach;
    centre_x.reserve(n);
    centre_y.reserve(n);
    reach.reserve(n);
    for (int64_t i = 0; i < n; ++i) {
      const auto& b = boxes[i];
      if (can_overlap(b)) {
        double rx, ry;
        reach_of(b, &rx, &ry);
        centre_x.push_back(centre(b.x1, b.x2));
        centre_y.push_back(centre(b.y1, b.y2));
        reach.push_back(std::max(rx, ry));
      }
    }
    grid_ = CentreGrid<RankedBox<acc_t>>(centre_x, centre_y, std::move(reach));
  }

  // True when a kept box overlaps b with IoU > threshold (threshold >= 0, b finite, non-empty).
  bool suppresses(const RankedBox<acc_t>& b, acc_t threshold) const {
    double rx, ry;
    reach_of(b, &rx, &ry);
    return grid_.any_near(centre(b.x1, b.x2), centre(b.y1, b.y2), rx, ry,
                          [&](const RankedBox<acc_t>& kept) { return overlaps_above(kept, b, threshold); });
  }

  void insert(const RankedBox<acc_t>& b) {
    grid_.insert(b, centre(b.x1, b.x2), centre(b.y1, b.y2));
  }

 private:
  static bool can_overlap(const RankedBox<acc_t>& b) {
    return b.area > acc_t(0) && box_is_finite(b);
  }

  static double centre(acc_t a, acc_t b) {
    return 0.5 * (static_cast<double>(a) + static_cast<double>(b));
  }

  // Search half-widths around b's centre, widened by a relative 1e-3 and a few float ulps of the
  // coordinates so that rounding in the IoU can never reach a box outside them.
  void reach_of(const RankedBox<acc_t>& b, double* rx, double* ry) const {
    const double w = static_cast<double>(b.x2) - b.x1, h = static_cast<double>(b.y2) - b.y1;
    const double slack_x = 1e-5 * (std::abs(static_cast<double>(b.x1)) + std::abs(static_cast<double>(b.x2)));
    const double slack_y = 1e-5 * (std::abs(static_cast<double>(b.y1)) + std::abs(static_cast<double>(b.y2)));
    *rx = std::min(reach_factor_ * w, 0.5 * (w + max_w_)) * 1.001 + slack_x;
    *ry = std::min(reach_factor_ * h, 0.5 * (h + max_h_)) * 1.001 + slack_y;
  }

  double reach_factor_;
  double max_w_ = 0, max_h_ = 0;
  CentreGrid<RankedBox<acc_t>> grid_;
};

// Below this many boxes a flat scan of the kept boxes beats building a grid.
constexpr int64_t kGridMinBoxes = 48;

// Below this many boxes batched_nms_ranked suppresses its categories on one thread.
constexpr int64_t kParallelMinBoxes = 2048;

// Greedy NMS over boxes already in rank order; keep[r] = 1 for each kept rank r.
template <typename acc_t>
void greedy_nms_ranked(const RankedBox<acc_t>* boxes, int64_t n, acc_t threshold, uint8_t* keep) {
  if (n == 0) {
    return;
  }
  if (!(threshold >= acc_t(0))) {
    // Every IoU (>= 0) exceeds a negative threshold: the top box suppresses all the others.
    std::memset(keep, 0, n);
    keep[0] = 1;
    return;
  }
  if (n < kGridMinBoxes) {
    std::vector<RankedBox<acc_t>> kept;
    kept.reserve(n);
    for (int64_t r = 0; r < n; ++r) {
      const auto& b = boxes[r];
      bool suppressed = false;
      for (const auto& k : kept) {
        if (overlaps_above(k, b, threshold)) {
          suppressed = true;
          break;
        }
      }
      keep[r] = suppressed ? 0 : 1;
      if (!suppressed && b.area > acc_t(0)) {
        kept.push_back(b);
      }
    }
    return;
  }
  KeptGrid<acc_t> grid(boxes, n, static_cast<double>(threshold));
  for (int64_t r = 0; r < n; ++r) {
    const auto& b = boxes[r];
    // An empty box has IoU 0 with everything: kept, and it suppresses nothing. So does a box with
    // an infinite coordinate (its area is infinite, so every IoU with it is 0 or NaN).
    if (!(b.area > acc_t(0)) || !box_is_finite(b)) {
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

template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
inline RankedBox<acc_t> load_box(const scalar_t* boxes, int64_t i) {
  const acc_t x1 = static_cast<acc_t>(boxes[4 * i + 0]);
  const acc_t y1 = static_cast<acc_t>(boxes[4 * i + 1]);
  const acc_t x2 = static_cast<acc_t>(boxes[4 * i + 2]);
  const acc_t y2 = static_cast<acc_t>(boxes[4 * i + 3]);
  return {x1, y1, x2, y2, box_area(x1, y1, x2, y2)};
}

// keep[r] = 1 for each rank r (boxes[order[r]]) that survives NMS among the boxes of its own
// category; boxes: [n, 4] of scalar_t, category: [n]. Categories are suppressed in parallel
// unless called from inside a parallel region.
template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void batched_nms_ranked(const scalar_t* boxes, const int64_t* category, const std::vector<int64_t>& order,
                        acc_t threshold, uint8_t* keep) {
  const int64_t n = static_cast<int64_t>(order.size());
  if (n == 0) {
    return;
  }
  // Group the ranks by category, each group still in rank order (a stable counting sort when
  // the category ids span a modest range, a stable comparison sort otherwise).
  std::vector<int64_t> grouped(n);  // positions r in rank order, grouped by category
  std::vector<int64_t> group_start;
  const auto [lo_it, hi_it] = std::minmax_element(category, category + n);
  const int64_t lo = *lo_it, hi = *hi_it;
  if (static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo) < static_cast<uint64_t>(4 * n + 1024)) {
    const int64_t span = hi - lo + 1;
    std::vector<int64_t> count(span + 1, 0);
    for (int64_t r = 0; r < n; ++r) {
      ++count[category[order[r]] - lo + 1];
    }
    std::partial_sum(count.begin(), count.end(), count.begin());
    for (int64_t c = 0; c < span; ++c) {
      if (count[c + 1] > count[c]) {
        group_start.push_back(count[c]);
      }
    }
    for (int64_t r = 0; r < n; ++r) {
      grouped[count[category[order[r]] - lo]++] = r;
    }
  } else {
    std::iota(grouped.begin(), grouped.end(), 0);
    std::stable_sort(grouped.begin(), grouped.end(),
                     [&](int64_t a, int64_t b) { return category[order[a]] < category[order[b]]; });
    for (int64_t k = 0; k < n; ++k) {
      if (k == 0 || category[order[grouped[k]]] != category[order[grouped[k - 1]]]) {
        group_start.push_back(k);
      }
    }
  }
  group_start.push_back(n);
  const int64_t num_groups = static_cast<int64_t>(group_start.size()) - 1;

  std::vector<RankedBox<acc_t>> ranked(n);  // in grouped order
  for (int64_t k = 0; k < n; ++k) {
    ranked[k] = load_box(boxes, order[grouped[k]]);
  }
  std::vector<uint8_t> keep_grouped(n, 0);
  // Categories are independent, of very different sizes (run_tasks). A few thousand boxes take
  // well under a millisecond, less than waking the other threads can cost on a loaded machine:
  // one thread.
  cpu::run_tasks(num_groups, n < kParallelMinBoxes ? 1 : at::get_num_threads(), [&](int64_t g) {
    const int64_t s = group_start[g], e = group_start[g + 1];
    greedy_nms_ranked(ranked.data() + s, e - s, threshold, keep_grouped.data() + s);
  });
  for (int64_t k = 0; k < n; ++k) {
    keep[grouped[k]] = keep_grouped[k];
  }
}

// The positions of the kept boxes (keep[r] = 1 for the box at position order[r]), at most `limit`
// of them, in the order a per-category NMS reports them: by rank (ties to the lower position),
// or, with sort_kept_scores, by a descending torch.sort (which is not stable) of the kept boxes'
// scores taken in increasing position, which is how torchvision's batched_nms orders its result
// above 1000 boxes on the CPU. The two orders differ only among equal scores; reproducing the
// second keeps the fused ops equal to torchvision's post-processing even then.
template <typename scalar_t>
std::vector<int64_t> kept_in_report_order(const std::vector<int64_t>& order, const uint8_t* keep,
                                          const scalar_t* scores, bool sort_kept_scores, int64_t limit) {
  const int64_t n = static_cast<int64_t>(order.size());
  std::vector<int64_t> out;
  if (!sort_kept_scores) {
    for (int64_t r = 0; r < n && static_cast<int64_t>(out.size()) < limit; ++r) {
      if (keep[r]) {
        out.push_back(order[r]);
      }
    }
    return out;
  }
  std::vector<uint8_t> kept_at(n, 0);
  for (int64_t r = 0; r < n; ++r) {
    kept_at[order[r]] = keep[r];
  }
  std::vector<int64_t> positions;
  for (int64_t i = 0; i < n; ++i) {
    if (kept_at[i]) {
      positions.push_back(i);
    }
  }
  const int64_t m = static_cast<int64_t>(positions.size());
  at::Tensor kept_scores =
      at::empty({m}, at::TensorOptions().dtype(c10::CppTypeToScalarType<scalar_t>::value));
  scalar_t* ks = kept_scores.mutable_data_ptr<scalar_t>();
  for (int64_t j = 0; j < m; ++j) {
    ks[j] = scores[positions[j]];
  }
  const at::Tensor perm = std::get<1>(at::sort(kept_scores, /*dim=*/0, /*descending=*/true));
  const int64_t* p = perm.const_data_ptr<int64_t>();
  const int64_t count = std::min(limit, m);
  out.resize(count);
  for (int64_t j = 0; j < count; ++j) {
    out[j] = positions[p[j]];
  }
  return out;
}

}  // namespace greedy_nms
}  // namespace roiops
