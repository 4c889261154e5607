// The RPN's proposal selection on the CPU, every level of every image in one call
// (roiops/postprocess.py states the semantics).
//
// Only the pre_nms_top_n anchors of each level are decoded: decoding is element-wise, so decoding
// the selected ones gives the boxes decoding all anchors would give them, at a fraction of the
// work. Three steps that reproduce PyTorch's own rounding or tie order call the same ATen function
// the element-wise formula calls: the per-level top-k (at::topk, whose order of equal logits is its
// own), the sigmoid of the selected logits (at::sigmoid, on the RPN's own [N, K] layout), and the
// exp inside the decoding (see cpu/box_coder.cpp). NMS is the shared greedy NMS (greedy_nms.h), one category per level.
//
// Parallel over (image, level) for the top-k and over images (or, for one image, over levels
// inside the NMS) for the rest; every result is independent of the thread count.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/gather.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/topk.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <numeric>
#include <tuple>
#include <vector>

#include "common/checks.h"
#include "cpu/box_coder.h"
#include "cpu/detection_select.h"
#include "cpu/run_tasks.h"

namespace roiops {
namespace {

struct RpnSettings {
  std::array<double, 4> weights;
  double bbox_xform_clip;
  int64_t post_nms_top_n;
  double nms_thresh, min_size, score_thresh;
};

// The proposals of one image from the anchor indices of its per-level top-k (int64 [K], level
// order, already offset into [0, A)), their levels [K] and their probabilities [K]. Writes boxes
// [P, 4] and scores [P].
template <typename scalar_t>
void rpn_image_cpu(const int64_t* top, const int64_t* top_level, const scalar_t* probs, int64_t k,
                   const scalar_t* deltas, const scalar_t* anchors, int64_t height, int64_t width,
                   const RpnSettings& s, const at::TensorOptions& options, at::Tensor* boxes_out,
                   at::Tensor* scores_out) {
  using acc_t = at::opmath_type<scalar_t>;
  // Gather the selected codes and anchors.
  at::Tensor codes = at::empty({k, 4}, options);
  at::Tensor refs = at::empty({k, 4}, options);
  std::vector<int64_t> level(top_level, top_level + k);
  scalar_t* gc = codes.mutable_data_ptr<scalar_t>();
  scalar_t* ga = refs.mutable_data_ptr<scalar_t>();
  for (int64_t j = 0; j < k; ++j) {
    const int64_t a = top[j];
    std::copy(deltas + 4 * a, deltas + 4 * a + 4, gc + 4 * j);
    std::copy(anchors + 4 * a, anchors + 4 * a + 4, ga + 4 * j);
  }
  at::Tensor decoded = at::empty({k, 4}, options);
  if (k > 0) {
    box_decode_kernel_cpu<scalar_t>(gc, ga, decoded.mutable_data_ptr<scalar_t>(), k, 1, s.weights,
                                    s.bbox_xform_clip, true, static_cast<double>(height),
                                    static_cast<double>(width));
  }
  // Small boxes and low scores out, compacted in place (the threshold rounded to the dtype, as
  // PyTorch compares a tensor with a number; NaN fails both tests).
  const acc_t min_size = static_cast<acc_t>(static_cast<scalar_t>(s.min_size));
  const acc_t score_thresh = static_cast<acc_t>(static_cast<scalar_t>(s.score_thresh));
  scalar_t* box = decoded.mutable_data_ptr<scalar_t>();
  std::vector<scalar_t> score(k);
  const scalar_t* p = probs;
  int64_t m = 0;
  for (int64_t i = 0; i < k; ++i) {
    const scalar_t* b = box + 4 * i;
    if (detection_select::sides_at_least(b, min_size) && static_cast<acc_t>(p[i]) >= score_thresh) {
      std::copy(b, b + 4, box + 4 * m);
      score[m] = p[i];
      level[m] = level[i];
      ++m;
    }
  }
  score.resize(m);
  level.resize(m);
  const std::vector<int64_t> kept = detection_select::batched_nms_report<scalar_t>(
      box, score.data(), level.data(), m, s.nms_thresh, s.post_nms_top_n);
  const int64_t num = static_cast<int64_t>(kept.size());
  *boxes_out = at::empty({num, 4}, options);
  *scores_out = at::empty({num}, options);
  scalar_t* ob = boxes_out->mutable_data_ptr<scalar_t>();
  scalar_t* os = scores_out->mutable_data_ptr<scalar_t>();
  for (int64_t q = 0; q < num; ++q) {
    std::copy(box + 4 * kept[q], box + 4 * kept[q] + 4, ob + 4 * q);
    os[q] = score[kept[q]];
  }
}

std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>> rpn_proposals_cpu(
    const at::Tensor& objectness_in, const at::Tensor& deltas_in, const at::Tensor& anchors_in,
    at::IntArrayRef num_anchors_per_level, at::IntArrayRef image_sizes, at::ArrayRef<double> weights,
    double bbox_xform_clip, int64_t pre_nms_top_n, int64_t post_nms_top_n, double nms_thresh, double min_size,
    double score_thresh) {
  const std::array<double, 4> w = check_rpn_proposals_args(objectness_in, deltas_in, anchors_in,
                                                           num_anchors_per_level, image_sizes, weights,
                                                           pre_nms_top_n, post_nms_top_n);
  const RpnSettings settings{w, bbox_xform_clip, post_nms_top_n, nms_thresh, min_size, score_thresh};
  const at::Tensor objectness = objectness_in.contiguous();
  const at::Tensor deltas = deltas_in.contiguous();
  const at::Tensor anchors = anchors_in.contiguous();
  const int64_t n = objectness.size(0), a = objectness.size(1);
  const int64_t levels = static_cast<int64_t>(num_anchors_per_level.size());
  std::vector<int64_t> offset(levels + 1, 0);
  for (int64_t l = 0; l < levels; ++l) {
    offset[l + 1] = offset[l] + num_anchors_per_level[l];
  }

  // Per-level top-k of every image: the largest tasks first, taken from a shared counter.
  std::vector<at::Tensor> top(n * levels);
  std::vector<int64_t> tasks(n * levels);
  std::iota(tasks.begin(), tasks.end(), 0);
  std::stable_sort(tasks.begin(), tasks.end(), [&](int64_t x, int64_t y) {
    return num_anchors_per_level[x % levels] > num_anchors_per_level[y % levels];
  });
  cpu::run_tasks(n * levels, at::get_num_threads(), [&](int64_t t) {
    const int64_t i = tasks[t] / levels, l = tasks[t] % levels;
    const int64_t size = num_anchors_per_level[l];
    const at::Tensor row = objectness.narrow(0, i, 1).narrow(1, offset[l], size);
    // The same call on the same values as the RPN's own per-level top-k, so equal logits come
    // out in the same order.
    top[tasks[t]] = std::get<1>(at::topk(row, std::min(pre_nms_top_n, size), 1, true, true)).add_(offset[l]);
  });

  // The selected logits of all images as one [N, K] tensor, level-major, and their sigmoid in one
  // call on it, from outside any parallel region: at::sigmoid rounds the elements at the tail of
  // each of its vectorized runs differently from the others, so this is the layout (the RPN's
  // objectness[batch_idx, top_n_idx]) that puts every element where the RPN's own call puts it.
  int64_t k = 0;
  for (int64_t l = 0; l < levels; ++l) {
    k += top[l].numel();
  }
  at::Tensor top_idx = at::empty({n, k}, objectness.options().dtype(at::kLong));
  std::vector<int64_t> top_level(k);
  int64_t* ti = top_idx.mutable_data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    int64_t j = 0;
    for (int64_t l = 0; l < levels; ++l) {
      const at::Tensor& t = top[i * levels + l];
      const int64_t* idx = t.const_data_ptr<int64_t>();
      for (int64_t q = 0; q < t.numel(); ++q, ++j) {
        ti[i * k + j] = idx[q];
        top_level[j] = l;
      }
    }
  }
  const at::Tensor probs = at::sigmoid(objectness.gather(1, top_idx));

  std::vector<at::Tensor> boxes(n), scores(n);
  const at::TensorOptions options = objectness.options();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, objectness.scalar_type(), "rpn_proposals_cpu", [&] {
    const scalar_t* dl = deltas.const_data_ptr<scalar_t>();
    const scalar_t* an = anchors.const_data_ptr<scalar_t>();
    const scalar_t* pr = probs.const_data_ptr<scalar_t>();
    const bool per_image_anchors = anchors.dim() == 3;
    auto image = [&](int64_t i) {
      rpn_image_cpu<scalar_t>(ti + i * k, top_level.data(), pr + i * k, k, dl + 4 * i * a,
                              an + (per_image_anchors ? 4 * i * a : 0), image_sizes[2 * i], image_sizes[2 * i + 1],
                              settings, options, &boxes[i], &scores[i]);
    };
    if (n == 1) {
      image(0);  // outside a parallel region, so the NMS spreads the levels over the threads
    } else {
      at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          image(i);
        }
      });
    }
  });
  return {boxes, scores};
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CPU, m) {
  m.impl("rpn_proposals", &rpn_proposals_cpu);
}

}  // namespace roiops
