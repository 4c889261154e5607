// The sampling plan of RoIAlign on the CPU, shared by roi_align.cpp (forward, backward to the
// maps) and roi_align_box_grad.cpp (backward to the boxes): the bilinear taps of every RoI (which
// rows and columns each sample reads, with what weight) are computed once per RoI from
// common/roi_align_math.h and stored per axis, because the 2-D weight of a sample is the product of
// its y and x weights. The kernels then only multiply and add over channels.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <vector>

#include "common/box_geometry.h"
#include "common/roi_align_math.h"

namespace roiops {
namespace cpu {

// One sample along one axis, kept only when it lands on the map (else it contributes nothing).
template <typename acc_t>
struct Tap {
  int64_t low, high;    // pixel rows (y taps) or columns (x taps)
  acc_t w_low, w_high;  // interpolation weights
  acc_t slope;          // d(w_high)/d(position), see AxisSample
  acc_t d_lo, d_hi;     // d(position)/d(box x1|y1), d(position)/d(box x2|y2)
};

// The taps of one RoI: bin ph's y taps are ys[y_begin[ph] .. y_begin[ph + 1]), likewise x.
template <typename acc_t>
struct RoiTaps {
  int64_t batch = 0;
  int64_t level = 0;
  acc_t inv_count = 1;
  std::vector<int32_t> y_begin, x_begin;
  std::vector<Tap<acc_t>> ys, xs;
};

// A feature map (one pyramid level) as the kernels see it.
struct LevelShape {
  int64_t height, width;
  double spatial_scale;
};

template <typename acc_t>
void build_axis_taps(const RoiAxis<acc_t>& axis, acc_t spatial_scale, int64_t pooled, int64_t size,
                     std::vector<int32_t>& begin, std::vector<Tap<acc_t>>& taps) {
  begin.assign(pooled + 1, 0);
  taps.clear();
  for (int64_t p = 0; p < pooled; ++p) {
    begin[p] = static_cast<int32_t>(taps.size());
    int64_t first, last;
    sample_index_range(axis, p, size, &first, &last);
    for (int64_t i = first; i < last; ++i) {
      const AxisSample<acc_t> s = bilinear_axis(sample_position(axis, p, i), size);
      if (s.w_low == acc_t(0) && s.w_high == acc_t(0)) {
        continue;  // outside [-1, size]
      }
      Tap<acc_t> t;
      t.low = s.low;
      t.high = s.high;
      t.w_low = s.w_low;
      t.w_high = s.w_high;
      t.slope = s.slope;
      sample_position_slopes(axis, spatial_scale, p, i, &t.d_lo, &t.d_hi);
      taps.push_back(t);
    }
  }
  begin[pooled] = static_cast<int32_t>(taps.size());
}

// Taps of every RoI. rois: [K, 5] contiguous, levels[k] the pyramid level of RoI k (nullptr: all
// on level 0). Raises a ValueError naming the first RoI whose batch index is not an integer in
// [0, batch_size). grain_size: RoIs per parallel chunk (a caller whose RoIs have few samples runs
// a few hundred on one thread rather than synchronise threads for them).
template <typename scalar_t, typename acc_t>
std::vector<RoiTaps<acc_t>> build_roi_taps(const char* op, const at::Tensor& rois, const int64_t* levels,
                                           const std::vector<LevelShape>& shapes, int64_t batch_size,
                                           int64_t pooled_height, int64_t pooled_width,
                                           int64_t sampling_ratio, bool aligned, int64_t grain_size = 16) {
  const int64_t num_rois = rois.size(0);
  const scalar_t* r = rois.const_data_ptr<scalar_t>();
  std::vector<RoiTaps<acc_t>> taps(num_rois);
  std::atomic<int64_t> first_bad{num_rois};
  at::parallel_for(0, num_rois, grain_size, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const scalar_t* roi = r + 5 * k;
      const acc_t b = static_cast<acc_t>(roi[0]);
      RoiTaps<acc_t>& t = taps[k];
      if (!is_batch_index(b, batch_size)) {
        int64_t seen = first_bad.load();
        while (k < seen && !first_bad.compare_exchange_weak(seen, k)) {
        }
        continue;
      }
      t.batch = static_cast<int64_t>(b);
      t.level = levels ? levels[k] : 0;
      const LevelShape& shape = shapes[t.level];
      const acc_t scale = static_cast<acc_t>(shape.spatial_scale);
      const acc_t x1 = static_cast<acc_t>(roi[1]), y1 = static_cast<acc_t>(roi[2]);
      const acc_t x2 = static_cast<acc_t>(roi[3]), y2 = static_cast<acc_t>(roi[4]);
      if (!roi_is_finite(x1, y1, x2, y2)) {
        t.y_begin.assign(pooled_height + 1, 0);  // no taps: pools to 0, no gradient
        t.x_begin.assign(pooled_width + 1, 0);
        continue;
      }
      const RoiAxis<acc_t> ay = roi_align_axis(y1, y2, scale, pooled_height, sampling_ratio, aligned);
      const RoiAxis<acc_t> ax = roi_align_axis(x1, x2, scale, pooled_width, sampling_ratio, aligned);
      t.inv_count = roi_align_inv_count(ay, ax);
      build_axis_taps(ay, scale, pooled_height, shape.height, t.y_begin, t.ys);
      build_axis_taps(ax, scale, pooled_width, shape.width, t.x_begin, t.xs);
    }
  });
  const int64_t bad = first_bad.load();
  if (bad < num_rois) {
    TORCH_CHECK_VALUE(false, op, ": rois[", bad, ", 0] (the batch index) must be an integer in [0, ",
                      batch_size, "), got ", static_cast<double>(r[5 * bad]));
  }
  return taps;
}

inline std::vector<LevelShape> level_shapes(const std::vector<int64_t>& heights, const std::vector<int64_t>& widths,
                                            const std::vector<double>& spatial_scales) {
  std::vector<LevelShape> shapes;
  for (size_t l = 0; l < heights.size(); ++l) {
    shapes.push_back({heights[l], widths[l], spatial_scales[l]});
  }
  return shapes;
}

}  // namespace cpu
}  // namespace roiops
