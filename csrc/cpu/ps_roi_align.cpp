// Position-sensitive RoIAlign (Dai et al., R-FCN; bilinear sampling as in He et al., Mask R-CNN) on
// the CPU: forward and backward to the input.
//
// The sample positions and bilinear weights of every RoI are RoIAlign's (roi_align_taps.h, with
// aligned=True's half-pixel shift, which PSRoIAlign always applies), computed once per RoI; a bin
// turns them into its weighted pixels (BinTaps; samples sharing a pixel read it once, AlignBins)
// and the drivers of ps_roi_pooling.h sum them for every output channel. Deterministic: the
// backward has one writer per element.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "common/checks.h"
#include "common/memory_format.h"
#include "common/ps_roi_math.h"
#include "cpu/ps_roi_pooling.h"
#include "cpu/roi_align_taps.h"
#include "cpu/vectorized_layout.h"

namespace roiops {
namespace cpu {
namespace {

// The taps of every RoI (raises for a bad batch index) with its batch index.
template <typename scalar_t, typename acc_t>
std::vector<RoiTaps<acc_t>> ps_align_taps(const char* op, const at::Tensor& rois, int64_t batch_size,
                                          int64_t height, int64_t width, double spatial_scale, int64_t pooled_height,
                                          int64_t pooled_width, int64_t sampling_ratio,
                                          std::vector<int64_t>& batch) {
  const std::vector<LevelShape> shapes{{height, width, spatial_scale}};
  // R-FCN's 300 RoIs of 7 x 7 bins take tens of microseconds on one thread: cheaper than a
  // parallel region, whose start waits for every thread to be scheduled.
  auto taps = build_roi_taps<scalar_t, acc_t>(op, rois, nullptr, shapes, batch_size, pooled_height, pooled_width,
                                              sampling_ratio, /*aligned=*/true, /*grain_size=*/1024);
  batch.resize(taps.size());
  for (size_t k = 0; k < taps.size(); ++k) {
    batch[k] = taps[k].batch;
  }
  return taps;
}

// The pixels one RoI reads along one axis, per bin, each once with its summed weight: bin p reads
// pixel[begin[p] .. begin[p + 1]) with weight[...], ascending.
template <typename acc_t>
struct MergedAxis {
  std::vector<int32_t> begin;
  std::vector<int64_t> pixel;
  std::vector<acc_t> weight;
};

// Each sample of a bin gives w_low to its low and w_high to its high pixel. Samples closer than a
// pixel share pixels, so their weights are summed here once per RoI instead of being read as
// separate taps for every output channel. Sample positions ascend within a bin, so a sample's
// pixels (low, and high = low or low + 1) are either among the last two pixels kept or after them.
template <typename acc_t>
void merge_axis(const std::vector<Tap<acc_t>>& taps, const std::vector<int32_t>& tap_begin, int64_t pooled,
                MergedAxis<acc_t>& m) {
  m.begin.assign(pooled + 1, 0);
  m.pixel.clear();
  m.weight.clear();
  const auto add = [&](int32_t first, int64_t pixel, acc_t w) {
    const int32_t size = static_cast<int32_t>(m.pixel.size());
    for (int32_t i = std::max(first, size - 2); i < size; ++i) {
      if (m.pixel[i] == pixel) {
        m.weight[i] += w;
        return;
      }
    }
    m.pixel.push_back(pixel);
    m.weight.push_back(w);
  };
  for (int64_t p = 0; p < pooled; ++p) {
    const int32_t first = static_cast<int32_t>(m.pixel.size());
    m.begin[p] = first;
    for (int32_t i = tap_begin[p]; i < tap_begin[p + 1]; ++i) {
      add(first, taps[i].low, taps[i].w_low);
      add(first, taps[i].high, taps[i].w_high);
    }
  }
  m.begin[pooled] = static_cast<int32_t>(m.pixel.size());
}

// Bin (ph, pw) of a RoI: a sample's bilinear weight is (y weight) x (x weight), so the bin's sum over
// its samples' corners is the sum over pixels (r, c) of Y[r] * X[c] * map[r, c], with Y and X the
// weights merged over the bin's samples (merge_axis). A 2 x 2 grid of samples in a bin under a
// pixel wide reads 4 pixels instead of 16 corners. Taps row-major, ascending.
template <typename acc_t>
struct AlignBins {
  const std::vector<RoiTaps<acc_t>>& taps;
  std::vector<MergedAxis<acc_t>> ys, xs;

  AlignBins(const std::vector<RoiTaps<acc_t>>& roi_taps, int64_t pooled_height, int64_t pooled_width)
      : taps(roi_taps), ys(roi_taps.size()), xs(roi_taps.size()) {
    // One thread: a few additions per sample, not worth a parallel region's synchronisation.
    for (size_t k = 0; k < taps.size(); ++k) {
      merge_axis(taps[k].ys, taps[k].y_begin, pooled_height, ys[k]);
      merge_axis(taps[k].xs, taps[k].x_begin, pooled_width, xs[k]);
    }
  }

  void operator()(int64_t k, int64_t ph, int64_t pw, int64_t stride_h, int64_t stride_w, BinTaps<acc_t>& b) const {
    const MergedAxis<acc_t>& my = ys[k];
    const MergedAxis<acc_t>& mx = xs[k];
    b.clear();
    b.scale = taps[k].inv_count;
    const int32_t y0 = my.begin[ph], y1 = my.begin[ph + 1], x0 = mx.begin[pw], x1 = mx.begin[pw + 1];
    b.resize(static_cast<size_t>(y1 - y0) * static_cast<size_t>(x1 - x0));
    int64_t* offset = b.offset.data();
    acc_t* weight = b.weight.data();
    for (int32_t i = y0; i < y1; ++i) {
      const int64_t row = my.pixel[i] * stride_h;
      const acc_t wy = my.weight[i];
      for (int32_t j = x0; j < x1; ++j) {
        *offset++ = row + mx.pixel[j] * stride_w;
        *weight++ = wy * mx.weight[j];
      }
    }
  }
};

at::Tensor ps_roi_align_forward_cpu(const at::Tensor& input, const at::Tensor& rois_in, double spatial_scale,
                                    int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio) {
  const int64_t channels_out =
      check_ps_roi_args("ps_roi_align", input, rois_in, spatial_scale, pooled_height, pooled_width);
  const auto format = memory_format_for(use_channels_last(input));
  const at::Tensor rois = rois_in.contiguous();
  const int64_t num_rois = rois.size(0);
  at::Tensor out =
      at::empty({num_rois, channels_out, pooled_height, pooled_width}, input.options().memory_format(format));
  if (num_rois == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "ps_roi_align_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    std::vector<int64_t> batch;
    const auto taps = ps_align_taps<scalar_t, acc_t>("ps_roi_align", rois, input.size(0), input.size(2),
                                                     input.size(3), spatial_scale, pooled_height, pooled_width,
                                                     sampling_ratio, batch);
    if (out.numel() == 0) {
      return;
    }
    ps_roi_forward_driver<scalar_t, acc_t>(input.const_data_ptr<scalar_t>(), map_strides(input), batch, input.size(0),
                                           channels_out, pooled_height, pooled_width,
                                           out.mutable_data_ptr<scalar_t>(), map_strides(out),
                                           AlignBins<acc_t>(taps, pooled_height, pooled_width));
  });
  return out;
}

at::Tensor ps_roi_align_backward_cpu(const at::Tensor& grad, const at::Tensor& rois_in, double spatial_scale,
                                     int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                     int64_t batch_size, int64_t channels, int64_t height, int64_t width,
                                     bool channels_last) {
  const int64_t channels_out = check_ps_roi_backward_args("ps_roi_align_backward", grad, rois_in, spatial_scale,
                                                          pooled_height, pooled_width, batch_size, channels,
                                                          height, width);
  const auto format = memory_format_for(channels_last);
  const at::ScalarType dtype = grad.scalar_type();
  const at::ScalarType acc_dtype = at::toOpMathType(dtype);
  at::Tensor grad_input =
      at::empty({batch_size, channels, height, width}, grad.options().dtype(acc_dtype).memory_format(format));
  const at::Tensor rois = rois_in.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "ps_roi_align_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    if (rois.size(0) == 0 || grad_input.numel() == 0) {
      zero_streaming(grad_input.mutable_data_ptr<acc_t>(), grad_input.numel());
      return;
    }
    std::vector<int64_t> batch;
    const auto taps = ps_align_taps<scalar_t, acc_t>("ps_roi_align_backward", rois, batch_size, height, width,
                                                     spatial_scale, pooled_height, pooled_width, sampling_ratio,
                                                     batch);
    ps_roi_backward_into<scalar_t, acc_t>(grad, batch, channels_out, pooled_height, pooled_width, grad_input,
                                         AlignBins<acc_t>(taps, pooled_height, pooled_width));
  });
  return acc_dtype != dtype ? grad_input.to(dtype) : grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CPU, m) {
  m.impl("ps_roi_align", &ps_roi_align_forward_cpu);
  m.impl("ps_roi_align_backward", &ps_roi_align_backward_cpu);
}

}  // namespace cpu
}  // namespace roiops
