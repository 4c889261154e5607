// Position-sensitive RoIAlign (Dai et al., R-FCN; bilinear sampling as in He et al., Mask R-CNN) on
// the CPU: forward and backward to the input.
//
// The sample positions and bilinear weights of every RoI are RoIAlign's (common/roi_align_math.h,
// with aligned=True's half-pixel shift, which PSRoIAlign always applies), computed once per RoI; a bin
// turns them into its weighted pixels (samples sharing a pixel read it once, AlignBins) and the
// drivers of ps_roi_pooling.h sum them for every output channel at once. Deterministic: the
// backward has one writer per element.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "common/ps_roi_math.h"
#include "cpu/ps_roi_pooling.h"

namespace roiops {
namespace cpu {
namespace {

// The pixels every RoI reads along one axis, per bin, each once with its summed weight: bin p of
// RoI k reads pixel[begin[k * pooled + p] .. end[k * pooled + p]) with weight[...]. Flat over all
// RoIs: R-FCN's 300 RoIs would otherwise cost thousands of small allocations per call, a tenth of
// the forward. Each RoI owns a slot of capacity() entries from reserve(), so RoIs fill their bins
// independently, on all threads.
template <typename acc_t>
struct MergedAxes {
  int64_t pooled;
  std::vector<int32_t> begin, end;
  std::vector<int64_t> slot;  // [K + 1]: RoI k's entries start at slot[k]
  std::vector<int32_t> pixel;
  std::vector<acc_t> weight;

  MergedAxes(int64_t num_rois, int64_t pooled)
      : pooled(pooled), begin(num_rois * pooled, 0), end(num_rois * pooled, 0), slot(num_rois + 1, 0) {}

  // Entries RoI k may need: two pixels per sample of each bin (samples outside the map need none).
  int64_t capacity(const RoiAxis<acc_t>& axis, int64_t size) const {
    int64_t n = 0;
    for (int64_t p = 0; p < pooled; ++p) {
      int64_t i0, i1;
      sample_index_range(axis, p, size, &i0, &i1);
      n += 2 * (i1 - i0);
    }
    return n;
  }

  // slot from the capacity of every RoI (in slot[k + 1]), once, on one thread.
  void reserve() {
    for (size_t k = 1; k < slot.size(); ++k) {
      slot[k] += slot[k - 1];
    }
    TORCH_CHECK_VALUE(slot.back() <= std::numeric_limits<int32_t>::max(),
                      "ps_roi_align: the boxes sample more than 2^31 map pixels in one call (", slot.back(),
                      "); pass fewer boxes per call or a positive sampling_ratio");
    pixel.resize(slot.back());
    weight.resize(slot.back());
  }

  // Fills the bins of RoI k in its slot: each sample gives w_low to its low and w_high to its high
  // pixel. Samples closer than a pixel share pixels, so their weights are summed here once per RoI
  // instead of being read as separate taps for every output channel. Sample positions ascend within
  // a bin, so a sample's pixels (low, and high = low or low + 1) are either among the last two
  // pixels kept or after them.
  void fill(int64_t k, const RoiAxis<acc_t>& axis, int64_t size) {
    int32_t n = static_cast<int32_t>(slot[k]);
    for (int64_t p = 0; p < pooled; ++p) {
      const int32_t first = n;
      const auto add = [&](int64_t px, acc_t w) {
        for (int32_t i = std::max(first, n - 2); i < n; ++i) {
          if (pixel[i] == px) {
            weight[i] += w;
            return;
          }
        }
        pixel[n] = static_cast<int32_t>(px);
        weight[n++] = w;
      };
      int64_t i0, i1;
      sample_index_range(axis, p, size, &i0, &i1);
      for (int64_t i = i0; i < i1; ++i) {
        const AxisSample<acc_t> s = bilinear_axis(sample_position(axis, p, i), size);
        if (s.w_low == acc_t(0) && s.w_high == acc_t(0)) {
          continue;  // outside [-1, size]
        }
        add(s.low, s.w_low);
        add(s.high, s.w_high);
      }
      begin[k * pooled + p] = first;
      end[k * pooled + p] = n;
    }
  }

  int32_t first(int64_t k, int64_t p) const { return begin[k * pooled + p]; }
  int32_t last(int64_t k, int64_t p) const { return end[k * pooled + p]; }
};

// Bin (ph, pw) of a RoI: a sample's bilinear weight is (y weight) x (x weight), so the bin's sum over
// its samples' corners is the sum over pixels (r, c) of Y[r] * X[c] * map[r, c], with Y and X the
// weights merged over the bin's samples (MergedAxes). A 2 x 2 grid of samples in a bin under a
// pixel wide reads 4 pixels instead of 16 corners. Sample positions and bilinear weights are
// RoIAlign's (common/roi_align_math.h, aligned=True). Pixels row-major, ascending; the Bins of
// ps_roi_pooling.h's drivers.
template <typename acc_t>
struct AlignBins {
  MergedAxes<acc_t> ys, xs;
  std::vector<acc_t> inv_count;  // [K]: 1 / samples per bin

  // On all threads, in two passes: each RoI's geometry and the room its pixels need, then (after the
  // slots are laid out) its pixels. One thread would spend a third of R-FCN's forward at 2 threads
  // here while the other waits.
  template <typename scalar_t>
  AlignBins(const scalar_t* rois, int64_t num_rois, acc_t spatial_scale, int64_t pooled_height, int64_t pooled_width,
            int64_t sampling_ratio, int64_t height, int64_t width)
      : ys(num_rois, pooled_height), xs(num_rois, pooled_width), inv_count(num_rois, acc_t(1)) {
    std::vector<RoiAxis<acc_t>> ay(num_rois), ax(num_rois);
    std::vector<char> finite(num_rois);
    constexpr int64_t kRoisPerTask = 32;
    at::parallel_for(0, num_rois, kRoisPerTask, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        const scalar_t* roi = rois + 5 * k;
        const acc_t x1 = static_cast<acc_t>(roi[1]), y1 = static_cast<acc_t>(roi[2]);
        const acc_t x2 = static_cast<acc_t>(roi[3]), y2 = static_cast<acc_t>(roi[4]);
        finite[k] = roi_is_finite(x1, y1, x2, y2);
        if (!finite[k]) {
          continue;  // no pixels: pools to 0, no gradient
        }
        ay[k] = ps_roi_align_axis(y1, y2, spatial_scale, pooled_height, sampling_ratio);
        ax[k] = ps_roi_align_axis(x1, x2, spatial_scale, pooled_width, sampling_ratio);
        inv_count[k] = roi_align_inv_count(ay[k], ax[k]);
        ys.slot[k + 1] = ys.capacity(ay[k], height);
        xs.slot[k + 1] = xs.capacity(ax[k], width);
      }
    });
    ys.reserve();
    xs.reserve();
    at::parallel_for(0, num_rois, kRoisPerTask, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        if (finite[k]) {
          ys.fill(k, ay[k], height);
          xs.fill(k, ax[k], width);
        }
      }
    });
  }

  void rows(int64_t k, int64_t ph, int64_t* r0, int64_t* r1) const {
    const int32_t i0 = ys.first(k, ph), i1 = ys.last(k, ph);
    *r0 = *r1 = 0;
    if (i0 == i1) {
      return;
    }
    *r0 = ys.pixel[i0];
    *r1 = ys.pixel[i1 - 1] + 1;
  }

  // acc[l] = inv_count * sum over the bin's pixels of Y[r] * X[c] * lane l (Pixels: ps_roi_pooling.h's
  // sources). Even and odd rows go to two sums, added at the end: one chain of multiply-adds would
  // wait out each one's latency (7 pixels a bin, one vector multiply-add each).
  template <typename Pixels>
  void pool(int64_t k, int64_t ph, int64_t pw, const Pixels& pixels, acc_t* acc) const {
    const int32_t i0 = ys.first(k, ph), i1 = ys.last(k, ph), j0 = xs.first(k, pw), j1 = xs.last(k, pw);
    typename Pixels::Vec sum[2] = {Pixels::zero(), Pixels::zero()};
    for (int32_t i = i0; i < i1; ++i) {
      const int64_t r = ys.pixel[i];
      const acc_t wy = ys.weight[i];
      typename Pixels::Vec& s = sum[(i - i0) & 1];
      for (int32_t j = j0; j < j1; ++j) {
        pixels.fma(s, wy * xs.weight[j], r, xs.pixel[j]);
      }
    }
    Pixels::store(Pixels::times(Pixels::sum(sum[0], sum[1]), inv_count[k]), acc);
  }

  // The adjoint of pool: lane l of each pixel += Y[r] * X[c] * (inv_count * g[l]), pixels in pool's
  // order.
  template <typename Pixels>
  void scatter(int64_t k, int64_t ph, int64_t pw, const acc_t* g, const Pixels& pixels) const {
    const int32_t i0 = ys.first(k, ph), i1 = ys.last(k, ph), j0 = xs.first(k, pw), j1 = xs.last(k, pw);
    const typename Pixels::Vec gc = Pixels::times(Pixels::load(g), inv_count[k]);
    for (int32_t i = i0; i < i1; ++i) {
      const int64_t r = ys.pixel[i];
      const acc_t wy = ys.weight[i];
      for (int32_t j = j0; j < j1; ++j) {
        pixels.fma_to(r, xs.pixel[j], wy * xs.weight[j], gc);
      }
    }
  }
};

at::Tensor ps_roi_align_forward_cpu(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                    int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio) {
  return ps_roi_forward_op("ps_roi_align", input, rois, spatial_scale, pooled_height, pooled_width,
                           [&](auto acc, const auto* roi_data, int64_t num_rois) {
                             using acc_t = decltype(acc);
                             return AlignBins<acc_t>(roi_data, num_rois, static_cast<acc_t>(spatial_scale),
                                                     pooled_height, pooled_width, sampling_ratio, input.size(2),
                                                     input.size(3));
                           });
}

at::Tensor ps_roi_align_backward_cpu(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                     int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                     int64_t batch_size, int64_t channels, int64_t height, int64_t width,
                                     bool channels_last) {
  return ps_roi_backward_op("ps_roi_align_backward", grad, rois, spatial_scale, pooled_height, pooled_width,
                            batch_size, channels, height, width, channels_last,
                            [&](auto acc, const auto* roi_data, int64_t num_rois) {
                              using acc_t = decltype(acc);
                              return AlignBins<acc_t>(roi_data, num_rois, static_cast<acc_t>(spatial_scale),
                                                      pooled_height, pooled_width, sampling_ratio, height, width);
                            });
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CPU, m) {
  m.impl("ps_roi_align", &ps_roi_align_forward_cpu);
  m.impl("ps_roi_align_backward", &ps_roi_align_backward_cpu);
}

}  // namespace cpu
}  // namespace roiops
