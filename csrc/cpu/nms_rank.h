// The rank order and output of the CPU suppression kernels (nms.cpp, nms_rotated.cpp, and the
// post-processing ops through greedy_nms.h), so that axis-aligned and rotated NMS rank and report
// boxes by one rule.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace roiops {
namespace cpu {

// Ranks of all boxes: indices sorted by decreasing score, NaN last, ties by lower index.
template <typename scalar_t>
std::vector<int64_t> rank_by_score(const scalar_t* scores, int64_t n) {
  using acc_t = at::opmath_type<scalar_t>;
  struct Entry {
    acc_t score;
    int64_t index;
  };
  std::vector<Entry> entries(n);
  for (int64_t i = 0; i < n; ++i) {
    entries[i] = {static_cast<acc_t>(scores[i]), i};
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    const bool a_nan = std::isnan(a.score), b_nan = std::isnan(b.score);
    if (a_nan != b_nan) {
      return b_nan;
    }
    if (!a_nan && a.score != b.score) {
      return a.score > b.score;
    }
    return a.index < b.index;
  });
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) {
    order[i] = entries[i].index;
  }
  return order;
}

// The kept indices (int64, on like's device), in rank order: order[r] for every r with keep[r].
inline at::Tensor kept_indices(const std::vector<int64_t>& order, const std::vector<uint8_t>& keep,
                               const at::Tensor& like) {
  int64_t num_kept = 0;
  for (uint8_t k : keep) {
    num_kept += k;
  }
  at::Tensor out = at::empty({num_kept}, like.options().dtype(at::kLong));
  int64_t* o = out.mutable_data_ptr<int64_t>();
  for (size_t r = 0; r < order.size(); ++r) {
    if (keep[r]) {
      *o++ = order[r];
    }
  }
  return out;
}

}  // namespace cpu
}  // namespace roiops
