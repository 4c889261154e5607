// Position-sensitive RoIPool (Dai et al., R-FCN) on the CPU: the average over each quantized bin
// (common/ps_roi_math.h, ps_roi_pool_bin) of that bin's own input channel, and its backward, which
// spreads each bin's gradient evenly over the bin's pixels.
//
// Each bin is computed once per call; the drivers of ps_roi_pooling.h sum its pixels for every
// output channel at once (one lane each), in row-major order and divided by the area, which is torchvision's
// arithmetic: float32 and float64 results equal torchvision's exactly. Deterministic: the backward
// has one writer per element.

#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "common/ps_roi_math.h"
#include "cpu/ps_roi_pooling.h"

namespace roiops {
namespace cpu {
namespace {

// The bins of every RoI, separable: bin (ph, pw) is rows [h0, h1) of bin row ph times columns
// [w0, w1) of bin column pw (ps_roi_pool_bin's ranges per axis, ps_roi_pool_range), so 7 + 7
// ranges per RoI, computed once per call, give its 49 bins. The Bins of ps_roi_pooling.h's
// drivers.
template <typename acc_t>
struct PoolBins {
  int64_t pooled_height, pooled_width;
  std::vector<int32_t> h0, h1, w0, w1;  // [K, PH] and [K, PW]

  template <typename scalar_t>
  PoolBins(const scalar_t* rois, int64_t num_rois, acc_t spatial_scale, int64_t pooled_height, int64_t pooled_width,
           int64_t height, int64_t width)
      : pooled_height(pooled_height), pooled_width(pooled_width), h0(num_rois * pooled_height),
        h1(num_rois * pooled_height), w0(num_rois * pooled_width), w1(num_rois * pooled_width) {
    for (int64_t k = 0; k < num_rois; ++k) {
      const acc_t x1 = static_cast<acc_t>(rois[5 * k + 1]), y1 = static_cast<acc_t>(rois[5 * k + 2]);
      const acc_t x2 = static_cast<acc_t>(rois[5 * k + 3]), y2 = static_cast<acc_t>(rois[5 * k + 4]);
      if (!roi_is_finite(x1 * spatial_scale, y1 * spatial_scale, x2 * spatial_scale, y2 * spatial_scale)) {
        continue;  // empty bins (the ranges stay [0, 0))
      }
      const PsPoolAxis<acc_t> ay = ps_roi_pool_axis(y1, y2, spatial_scale, pooled_height);
      const PsPoolAxis<acc_t> ax = ps_roi_pool_axis(x1, x2, spatial_scale, pooled_width);
      for (int64_t ph = 0; ph < pooled_height; ++ph) {
        int64_t r0, r1;
        ps_roi_pool_range(ay, ph, height, &r0, &r1);
        h0[k * pooled_height + ph] = static_cast<int32_t>(r0);
        h1[k * pooled_height + ph] = static_cast<int32_t>(std::max(r0, r1));
      }
      for (int64_t pw = 0; pw < pooled_width; ++pw) {
        int64_t c0, c1;
        ps_roi_pool_range(ax, pw, width, &c0, &c1);
        w0[k * pooled_width + pw] = static_cast<int32_t>(c0);
        w1[k * pooled_width + pw] = static_cast<int32_t>(std::max(c0, c1));
      }
    }
  }

  void rows(int64_t k, int64_t ph, int64_t* r0, int64_t* r1) const {
    *r0 = h0[k * pooled_height + ph];
    *r1 = h1[k * pooled_height + ph];
  }

  // acc[l] = the sum of lane l over the bin's pixels, row-major, divided by its area: torchvision's
  // additions and division, lane by lane. An empty bin gives 0. Pixels: ps_roi_pooling.h's sources.
  template <typename Pixels>
  void pool(int64_t k, int64_t ph, int64_t pw, const Pixels& pixels, acc_t* acc) const {
    const int64_t r0 = h0[k * pooled_height + ph], r1 = h1[k * pooled_height + ph];
    const int64_t c0 = w0[k * pooled_width + pw], c1 = w1[k * pooled_width + pw];
    typename Pixels::Vec sum = Pixels::zero();
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t c = c0; c < c1; ++c) {
        pixels.add(sum, r, c);
      }
    }
    if (r1 == r0 || c1 == c0) {
      Pixels::store(Pixels::zero(), acc);
      return;
    }
    Pixels::store(Pixels::over(sum, static_cast<acc_t>((r1 - r0) * (c1 - c0))), acc);
  }

  // The adjoint: g[l] / area added to lane l of every pixel of the bin.
  template <typename Pixels>
  void scatter(int64_t k, int64_t ph, int64_t pw, const acc_t* g, const Pixels& pixels) const {
    const int64_t r0 = h0[k * pooled_height + ph], r1 = h1[k * pooled_height + ph];
    const int64_t c0 = w0[k * pooled_width + pw], c1 = w1[k * pooled_width + pw];
    if (r1 == r0 || c1 == c0) {
      return;
    }
    const typename Pixels::Vec share = Pixels::over(Pixels::load(g), static_cast<acc_t>((r1 - r0) * (c1 - c0)));
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t c = c0; c < c1; ++c) {
        pixels.add_to(r, c, share);
      }
    }
  }
};

at::Tensor ps_roi_pool_forward_cpu(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                   int64_t pooled_height, int64_t pooled_width) {
  return ps_roi_forward_op("ps_roi_pool", input, rois, spatial_scale, pooled_height, pooled_width,
                           [&](auto acc, const auto* roi_data, int64_t num_rois) {
                             using acc_t = decltype(acc);
                             return PoolBins<acc_t>(roi_data, num_rois, static_cast<acc_t>(spatial_scale),
                                                    pooled_height, pooled_width, input.size(2), input.size(3));
                           });
}

at::Tensor ps_roi_pool_backward_cpu(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                    int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                    int64_t channels, int64_t height, int64_t width, bool channels_last) {
  return ps_roi_backward_op("ps_roi_pool_backward", grad, rois, spatial_scale, pooled_height, pooled_width,
                            batch_size, channels, height, width, channels_last,
                            [&](auto acc, const auto* roi_data, int64_t num_rois) {
                              using acc_t = decltype(acc);
                              return PoolBins<acc_t>(roi_data, num_rois, static_cast<acc_t>(spatial_scale),
                                                     pooled_height, pooled_width, height, width);
                            });
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CPU, m) {
  m.impl("ps_roi_pool", &ps_roi_pool_forward_cpu);
  m.impl("ps_roi_pool_backward", &ps_roi_pool_backward_cpu);
}

}  // namespace cpu
}  // namespace roiops
