// The box head's detections on CUDA: a host driver over existing device pieces (at::softmax, the
// box_decode kernel on the (proposal, class) pairs above the score threshold, the batched_nms
// kernels, one category per class), with the CPU kernel's semantics
// (cpu/detections_from_box_head.cpp). Each image costs one host synchronisation (the nonzero that
// sizes its candidates) besides those inside batched_nms.

#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/nonzero.h>
#include <ATen/ops/softmax.h>
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

std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>, std::vector<at::Tensor>>
detections_from_box_head_cuda(const at::Tensor& class_logits, const at::Tensor& box_deltas,
                              at::TensorList proposals, at::IntArrayRef image_sizes, at::ArrayRef<double> weights,
                              double bbox_xform_clip, double score_thresh, double nms_thresh,
                              int64_t detections_per_img, double min_size) {
  check_box_head_args(class_logits, box_deltas, proposals, image_sizes, weights, detections_per_img);
  const c10::cuda::CUDAGuard guard(class_logits.device());
  const int64_t n = static_cast<int64_t>(proposals.size());
  const int64_t classes = class_logits.size(1);
  const at::Tensor probs = at::softmax(class_logits, -1);
  const at::Tensor codes_all = box_deltas.reshape({-1, 4});  // [K * C, 4], row r * C + c
  std::vector<at::Tensor> boxes(n), scores(n), labels(n);
  int64_t first_row = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t rows = proposals[i].size(0);
    const at::Tensor p = probs.narrow(0, first_row, rows);
    // Foreground pairs above the threshold, proposal-major (nonzero's row-major order).
    const at::Tensor pairs = at::nonzero(p.narrow(1, 1, classes - 1).gt(score_thresh));  // [m, 2]
    const at::Tensor row = pairs.select(1, 0).contiguous();
    const at::Tensor label = pairs.select(1, 1) + 1;
    const at::Tensor flat = row * classes + label;
    const at::Tensor cand_scores = p.reshape(-1).index_select(0, flat);
    const at::Tensor codes = codes_all.index_select(0, flat + first_row * classes);
    const at::Tensor refs = proposals[i].index_select(0, row);
    const std::array<int64_t, 2> size{image_sizes[2 * i], image_sizes[2 * i + 1]};
    const at::Tensor decoded = box_decode_cuda(codes, refs, weights, bbox_xform_clip, at::IntArrayRef(size));
    const at::Tensor wh = decoded.narrow(1, 2, 2) - decoded.narrow(1, 0, 2);
    const at::Tensor big = at::nonzero(wh.ge(min_size).all(1)).squeeze(1);
    const at::Tensor b = decoded.index_select(0, big);
    const at::Tensor s = cand_scores.index_select(0, big);
    const at::Tensor c = label.index_select(0, big);
    const at::Tensor kept = batched_nms_cuda(b, s, c, nms_thresh);
    const at::Tensor best = kept.narrow(0, 0, std::min(detections_per_img, kept.size(0)));
    boxes[i] = b.index_select(0, best);
    scores[i] = s.index_select(0, best);
    labels[i] = c.index_select(0, best);
    first_row += rows;
  }
  return {boxes, scores, labels};
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CUDA, m) {
  m.impl("detections_from_box_head", &detections_from_box_head_cuda);
}

}  // namespace roiops
