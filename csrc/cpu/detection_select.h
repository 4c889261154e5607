// What the two detection post-processing kernels (rpn_proposals.cpp, detections_from_box_head.cpp)
// do alike once their candidates are decoded: the small-box test and a per-category NMS whose
// survivors come out in the order torchvision's batched_nms reports them.
#pragma once

#include <ATen/OpMathType.h>

#include <cstdint>
#include <vector>

#include "cpu/greedy_nms.h"

namespace roiops {
namespace detection_select {

// torchvision's batched_nms changes strategy, and with it the order of equal scores, above this
// many boxes on the CPU (greedy_nms::kept_in_report_order).
constexpr int64_t kSortedReportMinBoxes = 1001;

// Both sides of box b (x1, y1, x2, y2) at least min_size, each side the difference rounded to
// scalar_t and min_size already rounded to scalar_t, as PyTorch compares them (NaN fails).
template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
inline bool sides_at_least(const scalar_t* b, acc_t min_size) {
  const acc_t w = static_cast<acc_t>(static_cast<scalar_t>(acc_t(b[2]) - acc_t(b[0])));
  const acc_t h = static_cast<acc_t>(static_cast<scalar_t>(acc_t(b[3]) - acc_t(b[1])));
  return w >= min_size && h >= min_size;
}

// Greedy NMS of the m candidates (boxes [m, 4], scores [m], category [m]) within each category,
// then at most `limit` survivors: their positions, best first, equal scores as torchvision orders
// them.
template <typename scalar_t>
std::vector<int64_t> batched_nms_report(const scalar_t* boxes, const scalar_t* scores, const int64_t* category,
                                        int64_t m, double nms_thresh, int64_t limit) {
  using acc_t = at::opmath_type<scalar_t>;
  const std::vector<int64_t> order = cpu::rank_by_score(scores, m);
  std::vector<uint8_t> keep(m, 0);
  greedy_nms::batched_nms_ranked(boxes, category, order, static_cast<acc_t>(nms_thresh), keep.data());
  return greedy_nms::kept_in_report_order(order, keep.data(), scores, m >= kSortedReportMinBoxes, limit);
}

}  // namespace detection_select
}  // namespace roiops
