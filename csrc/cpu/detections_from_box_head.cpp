// The box head's detections on the CPU: softmax, per-class decoding, clipping, thresholds,
// per-class NMS and the best detections_per_img of every image, in one call (roiops/postprocess.py
// states the semantics).
//
// The score threshold comes first, so only the (proposal, class) pairs above it are decoded: at
// the usual 0.05 over 91 classes that is a small fraction of the pairs, and decoding is
// element-wise, so the surviving boxes are those decoding every pair would give. The softmax is
// at::softmax over all the logits and the exp inside the decoding is torch's (cpu/box_coder.cpp),
// so every value rounds as the element-wise PyTorch formula rounds it. NMS is the shared greedy NMS
// (greedy_nms.h), one category per class.
//
// Parallel over images (or, for one image, over classes inside the NMS); results are independent
// of the thread count.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/softmax.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <tuple>
#include <vector>

#include "common/checks.h"
#include "cpu/box_coder.h"
#include "cpu/detection_select.h"

namespace roiops {
namespace {

struct BoxHeadSettings {
  std::array<double, 4> weights;
  double bbox_xform_clip, score_thresh, nms_thresh, min_size;
  int64_t detections_per_img;
};

// The detections of one image from its rows of probabilities [P, C] and codes [P, 4 * C] and its
// proposals [P, 4].
template <typename scalar_t>
void box_head_image_cpu(const scalar_t* probs, const scalar_t* codes, const scalar_t* proposals, int64_t num_rows,
                        int64_t classes, int64_t height, int64_t width, const BoxHeadSettings& s,
                        const at::TensorOptions& options, at::Tensor* boxes_out, at::Tensor* scores_out,
                        at::Tensor* labels_out) {
  using acc_t = at::opmath_type<scalar_t>;
  // Candidates: (proposal, foreground class) pairs scoring above the threshold, proposal-major.
  const acc_t score_thresh = static_cast<acc_t>(static_cast<scalar_t>(s.score_thresh));
  std::vector<int64_t> row, label;
  std::vector<scalar_t> score;
  for (int64_t r = 0; r < num_rows; ++r) {
    const scalar_t* pr = probs + r * classes;
    for (int64_t c = 1; c < classes; ++c) {
      if (static_cast<acc_t>(pr[c]) > score_thresh) {  // false for NaN
        row.push_back(r);
        label.push_back(c);
        score.push_back(pr[c]);
      }
    }
  }
  const int64_t k = static_cast<int64_t>(row.size());
  std::vector<scalar_t> gathered(8 * k);  // codes [k, 4], then their proposals [k, 4]
  scalar_t* gc = gathered.data();
  scalar_t* gp = gathered.data() + 4 * k;
  for (int64_t i = 0; i < k; ++i) {
    std::copy(codes + row[i] * 4 * classes + 4 * label[i], codes + row[i] * 4 * classes + 4 * label[i] + 4,
              gc + 4 * i);
    std::copy(proposals + 4 * row[i], proposals + 4 * row[i] + 4, gp + 4 * i);
  }
  std::vector<scalar_t> box(4 * k);
  if (k > 0) {
    box_decode_kernel_cpu<scalar_t>(gc, gp, box.data(), k, 1, s.weights, s.bbox_xform_clip, true,
                                    static_cast<double>(height), static_cast<double>(width));
  }
  // Boxes with a side below min_size out, compacted in place.
  const acc_t min_size = static_cast<acc_t>(static_cast<scalar_t>(s.min_size));
  int64_t m = 0;
  for (int64_t i = 0; i < k; ++i) {
    const scalar_t* b = box.data() + 4 * i;
    if (detection_select::sides_at_least(b, min_size)) {
      std::copy(b, b + 4, box.data() + 4 * m);
      score[m] = score[i];
      label[m] = label[i];
      ++m;
    }
  }
  score.resize(m);
  label.resize(m);
  const std::vector<int64_t> kept = detection_select::batched_nms_report<scalar_t>(
      box.data(), score.data(), label.data(), m, s.nms_thresh, s.detections_per_img);
  const int64_t num = static_cast<int64_t>(kept.size());
  *boxes_out = at::empty({num, 4}, options);
  *scores_out = at::empty({num}, options);
  *labels_out = at::empty({num}, options.dtype(at::kLong));
  scalar_t* ob = boxes_out->mutable_data_ptr<scalar_t>();
  scalar_t* os = scores_out->mutable_data_ptr<scalar_t>();
  int64_t* ol = labels_out->mutable_data_ptr<int64_t>();
  for (int64_t q = 0; q < num; ++q) {
    std::copy(box.data() + 4 * kept[q], box.data() + 4 * kept[q] + 4, ob + 4 * q);
    os[q] = score[kept[q]];
    ol[q] = label[kept[q]];
  }
}

std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>, std::vector<at::Tensor>> detections_from_box_head_cpu(
    const at::Tensor& class_logits, const at::Tensor& box_deltas_in, at::TensorList proposals_in,
    at::IntArrayRef image_sizes, at::ArrayRef<double> weights, double bbox_xform_clip, double score_thresh,
    double nms_thresh, int64_t detections_per_img, double min_size) {
  const std::array<double, 4> w =
      check_box_head_args(class_logits, box_deltas_in, proposals_in, image_sizes, weights, detections_per_img);
  const BoxHeadSettings settings{w, bbox_xform_clip, score_thresh, nms_thresh, min_size, detections_per_img};
  const int64_t n = static_cast<int64_t>(proposals_in.size());
  const int64_t classes = class_logits.size(1);
  // The same call on the same values as F.softmax(class_logits, -1), so every probability rounds
  // as there.
  const at::Tensor probs = at::softmax(class_logits, -1).contiguous();
  const at::Tensor box_deltas = box_deltas_in.contiguous();
  std::vector<at::Tensor> proposals(n);
  std::vector<int64_t> first_row(n + 1, 0);
  for (int64_t i = 0; i < n; ++i) {
    proposals[i] = proposals_in[i].contiguous();
    first_row[i + 1] = first_row[i] + proposals[i].size(0);
  }
  std::vector<at::Tensor> boxes(n), scores(n), labels(n);
  const at::TensorOptions options = class_logits.options();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, class_logits.scalar_type(),
                                  "detections_from_box_head_cpu", [&] {
    const scalar_t* pr = probs.const_data_ptr<scalar_t>();
    const scalar_t* cd = box_deltas.const_data_ptr<scalar_t>();
    auto image = [&](int64_t i) {
      const int64_t r0 = first_row[i];
      box_head_image_cpu<scalar_t>(pr + r0 * classes, cd + r0 * 4 * classes,
                                   proposals[i].const_data_ptr<scalar_t>(), proposals[i].size(0), classes,
                                   image_sizes[2 * i], image_sizes[2 * i + 1], settings, options, &boxes[i],
                                   &scores[i], &labels[i]);
    };
    if (n == 1) {
      image(0);  // outside a parallel region, so the NMS spreads the classes over the threads
    } else {
      at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          image(i);
        }
      });
    }
  });
  return {boxes, scores, labels};
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CPU, m) {
  m.impl("detections_from_box_head", &detections_from_box_head_cpu);
}

}  // namespace roiops
