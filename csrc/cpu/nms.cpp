// Non-maximum suppression on the CPU: nms, batched_nms (per category, one call) and soft_nms.
// The greedy algorithm and its IoU are in greedy_nms.h, the rank order in nms_rank.h.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "cpu/greedy_nms.h"

namespace roiops {
namespace {

using cpu::kept_indices;
using cpu::rank_by_score;
using greedy_nms::batched_nms_ranked;
using greedy_nms::greedy_nms_ranked;
using greedy_nms::load_box;
using greedy_nms::RankedBox;

void check_nms_args(const char* op, const at::Tensor& boxes, const at::Tensor& scores) {
  // The Python wrapper validates; these checks only guard direct torch.ops calls.
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 4, op, ": boxes must be [N, 4], got ", boxes.sizes());
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == boxes.size(0), op, ": scores must be [N] for boxes [N, 4], got ",
              scores.sizes());
  TORCH_CHECK(boxes.scalar_type() == scores.scalar_type(), op, ": boxes and scores dtypes differ");
  TORCH_CHECK(at::isFloatingType(boxes.scalar_type()), op, ": boxes must be a floating dtype");
}

at::Tensor nms_cpu(const at::Tensor& boxes_in, const at::Tensor& scores_in, double iou_threshold) {
  check_nms_args("nms", boxes_in, scores_in);
  const at::Tensor boxes = boxes_in.contiguous();
  const at::Tensor scores = scores_in.contiguous();
  const int64_t n = boxes.size(0);
  std::vector<int64_t> order;
  std::vector<uint8_t> keep(n, 0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes.scalar_type(), "nms_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    order = rank_by_score(scores.const_data_ptr<scalar_t>(), n);
    const scalar_t* b = boxes.const_data_ptr<scalar_t>();
    std::vector<RankedBox<acc_t>> ranked(n);
    for (int64_t r = 0; r < n; ++r) {
      ranked[r] = load_box(b, order[r]);
    }
    greedy_nms_ranked(ranked.data(), n, static_cast<acc_t>(iou_threshold), keep.data());
  });
  return kept_indices(order, keep, boxes);
}

at::Tensor batched_nms_cpu(const at::Tensor& boxes_in, const at::Tensor& scores_in, const at::Tensor& idxs_in,
                           double iou_threshold) {
  check_nms_args("batched_nms", boxes_in, scores_in);
  TORCH_CHECK(idxs_in.dim() == 1 && idxs_in.size(0) == boxes_in.size(0),
              "batched_nms: idxs must be [N] for boxes [N, 4], got ", idxs_in.sizes());
  TORCH_CHECK(idxs_in.scalar_type() == at::kLong, "batched_nms: idxs must be int64");
  const at::Tensor boxes = boxes_in.contiguous();
  const at::Tensor scores = scores_in.contiguous();
  const at::Tensor idxs = idxs_in.contiguous();
  const int64_t n = boxes.size(0);
  const int64_t* category = idxs.const_data_ptr<int64_t>();
  std::vector<int64_t> order;
  std::vector<uint8_t> keep(n, 0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes.scalar_type(), "batched_nms_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    order = rank_by_score(scores.const_data_ptr<scalar_t>(), n);
    if (n == 0) {
      return;
    }
    batched_nms_ranked(boxes.const_data_ptr<scalar_t>(), category, order, static_cast<acc_t>(iou_threshold),
                       keep.data());
  });
  return kept_indices(order, keep, boxes);
}

// Soft-NMS (Bodla et al. 2017): repeatedly take the highest-scoring remaining box and decay the
// scores of the others by their overlap with it, instead of removing them.
std::tuple<at::Tensor, at::Tensor> soft_nms_cpu(const at::Tensor& boxes_in, const at::Tensor& scores_in,
                                                double iou_threshold, double sigma, double score_threshold,
                                                int64_t method) {
  check_nms_args("soft_nms", boxes_in, scores_in);
  TORCH_CHECK(method == 0 || method == 1, "soft_nms: method must be 0 (linear) or 1 (gaussian), got ", method);
  const at::Tensor boxes = boxes_in.contiguous();
  const at::Tensor scores = scores_in.contiguous();
  const int64_t n = boxes.size(0);
  at::Tensor kept, kept_scores;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes.scalar_type(), "soft_nms_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* b = boxes.const_data_ptr<scalar_t>();
    const scalar_t* s = scores.const_data_ptr<scalar_t>();
    const acc_t thr = static_cast<acc_t>(iou_threshold);
    const acc_t min_score = static_cast<acc_t>(score_threshold);
    const acc_t inv_sigma = acc_t(1) / static_cast<acc_t>(sigma);
    // The live set, compacted as boxes leave it; kept in index order so ties go to the lower index.
    std::vector<RankedBox<acc_t>> live_box;
    std::vector<acc_t> live_score;
    std::vector<int64_t> live_index;
    for (int64_t i = 0; i < n; ++i) {
      const acc_t score = static_cast<acc_t>(s[i]);
      if (score >= min_score) {  // false for NaN: a NaN score is dropped
        live_box.push_back(load_box(b, i));
        live_score.push_back(score);
        live_index.push_back(i);
      }
    }
    std::vector<int64_t> out_index;
    std::vector<acc_t> out_score;
    while (!live_index.empty()) {
      const int64_t m = static_cast<int64_t>(live_index.size());
      int64_t best = 0;
      for (int64_t j = 1; j < m; ++j) {
        if (live_score[j] > live_score[best]) {
          best = j;
        }
      }
      const RankedBox<acc_t> top = live_box[best];
      out_index.push_back(live_index[best]);
      out_score.push_back(live_score[best]);
      int64_t w = 0;
      for (int64_t j = 0; j < m; ++j) {
        if (j == best) {
          continue;
        }
        const auto& c = live_box[j];
        const acc_t iou = box_iou_with_areas(top.x1, top.y1, top.x2, top.y2, top.area, c.x1, c.y1, c.x2, c.y2, c.area);
        acc_t decay = acc_t(1);
        if (method == 0) {
          decay = iou > thr ? acc_t(1) - iou : acc_t(1);
        } else {
          decay = std::exp(-(iou * iou) * inv_sigma);
        }
        const acc_t score = live_score[j] * decay;
        if (score >= min_score) {
          live_box[w] = c;
          live_score[w] = score;
          live_index[w] = live_index[j];
          ++w;
        }
      }
      live_box.resize(w);
      live_score.resize(w);
      live_index.resize(w);
    }
    const int64_t k = static_cast<int64_t>(out_index.size());
    kept = at::empty({k}, boxes.options().dtype(at::kLong));
    kept_scores = at::empty({k}, scores.options());
    std::copy(out_index.begin(), out_index.end(), kept.mutable_data_ptr<int64_t>());
    scalar_t* ks = kept_scores.mutable_data_ptr<scalar_t>();
    for (int64_t i = 0; i < k; ++i) {
      ks[i] = static_cast<scalar_t>(out_score[i]);
    }
  });
  return {kept, kept_scores};
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CPU, m) {
  m.impl("nms", &nms_cpu);
  m.impl("batched_nms", &batched_nms_cpu);
  m.impl("soft_nms", &soft_nms_cpu);
}

}  // namespace roiops
