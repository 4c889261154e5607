// The RPN's proposal selection on CUDA: a host driver over existing device pieces (at::topk per
// level, the box_decode kernel on the selected anchors, the batched_nms kernels, one category per
// level), with the CPU kernel's semantics (cpu/rpn_proposals.cpp). Each image costs one host
// synchronisation (the nonzero that sizes its candidates) besides those inside batched_nms.

#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/full.h>
#include <ATen/ops/nonzero.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/topk.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <tuple>
#include <vector>

#include "common/checks.h"
#include "cuda/postprocess.cuh"

namespace roiops {
namespace {

std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>> rpn_proposals_cuda(
    const at::Tensor& objectness, const at::Tensor& deltas, const at::Tensor& anchors,
    at::IntArrayRef num_anchors_per_level, at::IntArrayRef image_sizes, at::ArrayRef<double> weights,
    double bbox_xform_clip, int64_t pre_nms_top_n, int64_t post_nms_top_n, double nms_thresh, double min_size,
    double score_thresh) {
  check_rpn_proposals_args(objectness, deltas, anchors, num_anchors_per_level, image_sizes, weights, pre_nms_top_n,
                           post_nms_top_n);
  const c10::cuda::CUDAGuard guard(objectness.device());
  const int64_t n = objectness.size(0);
  const at::TensorOptions index_options = objectness.options().dtype(at::kLong);
  // Per-level top-k (the same call as the CPU's and the RPN's, so equal logits order alike).
  std::vector<at::Tensor> top, level;
  int64_t offset = 0;
  for (size_t l = 0; l < num_anchors_per_level.size(); ++l) {
    const int64_t size = num_anchors_per_level[l];
    const int64_t k = std::min(pre_nms_top_n, size);
    const at::Tensor row = objectness.narrow(1, offset, size);
    top.push_back(std::get<1>(at::topk(row, k, 1, true, true)) + offset);
    level.push_back(at::full({k}, static_cast<int64_t>(l), index_options));
    offset += size;
  }
  const at::Tensor top_idx = at::cat(top, 1);       // [N, K]
  const at::Tensor top_level = at::cat(level, 0);   // [K]
  std::vector<at::Tensor> boxes(n), scores(n);
  for (int64_t i = 0; i < n; ++i) {
    const at::Tensor idx = top_idx[i];
    const at::Tensor probs = at::sigmoid(objectness[i].index_select(0, idx));
    const at::Tensor codes = deltas[i].index_select(0, idx);
    const at::Tensor refs = (anchors.dim() == 3 ? anchors[i] : anchors).index_select(0, idx);
    const std::array<int64_t, 2> size{image_sizes[2 * i], image_sizes[2 * i + 1]};
    const at::Tensor decoded = box_decode_cuda(codes, refs, weights, bbox_xform_clip, at::IntArrayRef(size));
    const at::Tensor wh = decoded.narrow(1, 2, 2) - decoded.narrow(1, 0, 2);
    const at::Tensor ok = wh.ge(min_size).all(1).logical_and_(probs.ge(score_thresh));
    const at::Tensor cand = at::nonzero(ok).squeeze(1);
    const at::Tensor cand_boxes = decoded.index_select(0, cand);
    const at::Tensor cand_scores = probs.index_select(0, cand);
    const at::Tensor kept =
        batched_nms_cuda(cand_boxes, cand_scores, top_level.index_select(0, cand), nms_thresh);
    const at::Tensor best = kept.narrow(0, 0, std::min(post_nms_top_n, kept.size(0)));
    boxes[i] = cand_boxes.index_select(0, best);
    scores[i] = cand_scores.index_select(0, best);
  }
  return {boxes, scores};
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CUDA, m) {
  m.impl("rpn_proposals", &rpn_proposals_cuda);
}

}  // namespace roiops
