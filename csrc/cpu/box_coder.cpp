// R-CNN box encoding and decoding on the CPU (the steps are in common/box_coding.h).
//
// Three passes, each over all the boxes: the argument of the transcendental (split across threads
// and vectorized by the compiler); torch's own exp or log, in place on a contiguous buffer of the
// dtype; everything else, writing whole output rows (stores of half rows do not vectorize), the
// box frames recomputed rather than stored. Calling torch's exp / log is what keeps the results
// bit-identical to the element-wise PyTorch formula: torch evaluates them with MKL's vector math,
// SLEEF or libm depending on the build, the CPU and the dtype, and none of those is correctly
// rounded, so no other implementation agrees with it everywhere. It runs once over the whole
// buffer, between the parallel passes (and parallel itself), rather than once per chunk inside
// them. Each output element depends only on its own inputs, so results do not depend on the number
// of threads.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <limits>

#include "common/box_coding.h"
#include "common/checks.h"
#include "cpu/box_coder.h"

// A product fused with the sum after it (an FMA) rounds once where PyTorch rounds twice, and GCC
// contracts across statements by default; turn contraction off for the kernels below. Clang
// contracts only within one expression, which the coding steps never write.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif

namespace roiops {
namespace {

using coding::AxisFrame;
using coding::round_to;

// Boxes (or box-class pairs) per task of the element-wise passes.
constexpr int64_t kGrain = 4096;

// The weights as the PyTorch formula held them: a tensor of the boxes' dtype.
template <typename scalar_t, typename acc_t>
std::array<acc_t, 4> weights_as(const std::array<double, 4>& w) {
  return {static_cast<acc_t>(static_cast<scalar_t>(w[0])), static_cast<acc_t>(static_cast<scalar_t>(w[1])),
          static_cast<acc_t>(static_cast<scalar_t>(w[2])), static_cast<acc_t>(static_cast<scalar_t>(w[3]))};
}

template <typename scalar_t>
at::Tensor scratch(int64_t size) {
  return at::empty({size}, at::TensorOptions().dtype(c10::CppTypeToScalarType<scalar_t>::value));
}

// ---- encode ----------------------------------------------------------------------------------

template <typename scalar_t>
void box_encode_kernel_cpu(const scalar_t* gt, const scalar_t* proposals, scalar_t* out, int64_t n,
                           const std::array<double, 4>& weights) {
  using acc_t = at::opmath_type<scalar_t>;
  const std::array<acc_t, 4> w = weights_as<scalar_t, acc_t>(weights);
  // The size ratios g_size / p_size, then their logs.
  at::Tensor ratio_buffer = scratch<scalar_t>(2 * n);
  scalar_t* ratio = ratio_buffer.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const scalar_t* p = proposals + 4 * i;
      const scalar_t* g = gt + 4 * i;
      const AxisFrame<scalar_t, acc_t> px(p[0], p[2]), py(p[1], p[3]);
      const AxisFrame<scalar_t, acc_t> gx(g[0], g[2]), gy(g[1], g[3]);
      ratio[2 * i + 0] = static_cast<scalar_t>(coding::encode_size_ratio<scalar_t>(gx.size, px.size));
      ratio[2 * i + 1] = static_cast<scalar_t>(coding::encode_size_ratio<scalar_t>(gy.size, py.size));
    }
  });
  ratio_buffer.log_();
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const scalar_t* p = proposals + 4 * i;
      const scalar_t* g = gt + 4 * i;
      const AxisFrame<scalar_t, acc_t> px(p[0], p[2]), py(p[1], p[3]);
      const AxisFrame<scalar_t, acc_t> gx(g[0], g[2]), gy(g[1], g[3]);
      out[4 * i + 0] = static_cast<scalar_t>(coding::encode_centre<scalar_t>(gx.centre, px.centre, w[0], px.size));
      out[4 * i + 1] = static_cast<scalar_t>(coding::encode_centre<scalar_t>(gy.centre, py.centre, w[1], py.size));
      out[4 * i + 2] = static_cast<scalar_t>(coding::encode_log_size<scalar_t>(acc_t(ratio[2 * i + 0]), w[2]));
      out[4 * i + 3] = static_cast<scalar_t>(coding::encode_log_size<scalar_t>(acc_t(ratio[2 * i + 1]), w[3]));
    }
  });
}

at::Tensor box_encode_cpu(const at::Tensor& reference_boxes, const at::Tensor& proposals,
                          at::ArrayRef<double> weights) {
  // The Python wrapper validates; these checks only guard direct torch.ops calls.
  const std::array<double, 4> w = check_box_encode_args(reference_boxes, proposals, weights);
  const at::Tensor gt = reference_boxes.contiguous();
  const at::Tensor p = proposals.contiguous();
  at::Tensor out = at::empty_like(gt);
  if (out.numel() == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gt.scalar_type(), "box_encode_cpu", [&] {
    box_encode_kernel_cpu<scalar_t>(gt.const_data_ptr<scalar_t>(), p.const_data_ptr<scalar_t>(),
                                    out.mutable_data_ptr<scalar_t>(), gt.size(0), w);
  });
  return out;
}

// ---- decode ----------------------------------------------------------------------------------

// Calls body(k, frame_x, frame_y) for every box-class pair k of boxes [begin, end), the frames
// being those of pair k's box. One class: a flat loop over boxes; more: the box's frame is computed
// once and the loop over its classes is the vectorized one.
template <typename scalar_t, typename acc_t, typename Body>
inline void for_each_pair(const scalar_t* boxes, int64_t classes, int64_t begin, int64_t end, const Body& body) {
  if (classes == 1) {
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* b = boxes + 4 * r;
      body(r, AxisFrame<scalar_t, acc_t>(b[0], b[2]), AxisFrame<scalar_t, acc_t>(b[1], b[3]));
    }
    return;
  }
  for (int64_t r = begin; r < end; ++r) {
    const scalar_t* b = boxes + 4 * r;
    const AxisFrame<scalar_t, acc_t> fx(b[0], b[2]), fy(b[1], b[3]);
    for (int64_t k = r * classes; k < (r + 1) * classes; ++k) {
      body(k, fx, fy);
    }
  }
}

}  // namespace

template <typename scalar_t>
void box_decode_kernel_cpu(const scalar_t* codes, const scalar_t* boxes, scalar_t* out, int64_t n,
                           int64_t classes, const std::array<double, 4>& weights, double bbox_xform_clip,
                           bool clip_to_image, double image_height, double image_width) {
  using acc_t = at::opmath_type<scalar_t>;
  using Frame = AxisFrame<scalar_t, acc_t>;
  const std::array<acc_t, 4> w = weights_as<scalar_t, acc_t>(weights);
  const acc_t clip = static_cast<acc_t>(bbox_xform_clip);
  // Without clipping to the image the bounds are infinite: the clamp is then the identity (NaN and
  // infinities included), and the loop has no branch to keep it from vectorizing.
  const acc_t inf = std::numeric_limits<acc_t>::infinity();
  const acc_t low = clip_to_image ? acc_t(0) : -inf;
  const acc_t max_x = clip_to_image ? static_cast<acc_t>(image_width) : inf;
  const acc_t max_y = clip_to_image ? static_cast<acc_t>(image_height) : inf;
  const int64_t grain = std::max<int64_t>(1, kGrain / classes);
  // The exp arguments d / w clamped at bbox_xform_clip, then their exps.
  at::Tensor scale_buffer = scratch<scalar_t>(2 * n * classes);
  scalar_t* scale = scale_buffer.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
    for_each_pair<scalar_t, acc_t>(boxes, classes, begin, end, [&](int64_t k, const Frame& fx, const Frame& fy) {
      const scalar_t* d = codes + 4 * k;
      scale[2 * k + 0] = static_cast<scalar_t>(coding::decode_log_size<scalar_t>(acc_t(d[2]), w[2], clip));
      scale[2 * k + 1] = static_cast<scalar_t>(coding::decode_log_size<scalar_t>(acc_t(d[3]), w[3], clip));
    });
  });
  scale_buffer.exp_();
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
    for_each_pair<scalar_t, acc_t>(boxes, classes, begin, end, [&](int64_t k, const Frame& fx, const Frame& fy) {
      const scalar_t* d = codes + 4 * k;
      scalar_t* o = out + 4 * k;
      acc_t corners[4];
      coding::decode_corners<scalar_t>(acc_t(d[0]), acc_t(d[1]), w[0], w[1], acc_t(scale[2 * k + 0]),
                                       acc_t(scale[2 * k + 1]), fx, fy, low, max_x, max_y, corners);
      for (int c = 0; c < 4; ++c) {
        o[c] = static_cast<scalar_t>(corners[c]);
      }
    });
  });
}

template void box_decode_kernel_cpu<float>(const float*, const float*, float*, int64_t, int64_t,
                                           const std::array<double, 4>&, double, bool, double, double);
template void box_decode_kernel_cpu<double>(const double*, const double*, double*, int64_t, int64_t,
                                            const std::array<double, 4>&, double, bool, double, double);
template void box_decode_kernel_cpu<c10::Half>(const c10::Half*, const c10::Half*, c10::Half*, int64_t, int64_t,
                                               const std::array<double, 4>&, double, bool, double, double);
template void box_decode_kernel_cpu<c10::BFloat16>(const c10::BFloat16*, const c10::BFloat16*, c10::BFloat16*,
                                                   int64_t, int64_t, const std::array<double, 4>&, double, bool,
                                                   double, double);

namespace {

at::Tensor box_decode_cpu(const at::Tensor& rel_codes, const at::Tensor& boxes, at::ArrayRef<double> weights,
                          double bbox_xform_clip, at::OptionalIntArrayRef image_size) {
  const std::array<double, 4> w = check_box_decode_args(rel_codes, boxes, weights, image_size);
  const at::Tensor codes = rel_codes.contiguous();
  const at::Tensor b = boxes.contiguous();
  at::Tensor out = at::empty_like(codes);
  if (out.numel() == 0) {
    return out;
  }
  const bool clip_to_image = image_size.has_value();
  const double height = clip_to_image ? static_cast<double>((*image_size)[0]) : 0.0;
  const double width = clip_to_image ? static_cast<double>((*image_size)[1]) : 0.0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, codes.scalar_type(), "box_decode_cpu", [&] {
    box_decode_kernel_cpu<scalar_t>(codes.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(),
                                    out.mutable_data_ptr<scalar_t>(), b.size(0), codes.size(1) / 4, w,
                                    bbox_xform_clip, clip_to_image, height, width);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CPU, m) {
  m.impl("box_encode", &box_encode_cpu);
  m.impl("box_decode", &box_decode_cpu);
}

}  // namespace roiops

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif
