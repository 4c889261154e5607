// RoIAlign on CUDA, what roi_align.cu (forward, backward to the maps) and roi_align_box_grad.cu
// (backward to the boxes) share: the pyramid as the kernels see it, and one RoI resolved once per
// thread from common/roi_align_math.h (its image, its level and the sampling geometry of both
// axes). The CPU's counterpart is cpu/roi_align_taps.h.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/Atomic.cuh>
#include <c10/util/Exception.h>

#include <cstdint>
#include <type_traits>
#include <vector>

#include "common/box_geometry.h"
#include "common/checks.h"
#include "common/roi_align_math.h"
#include "cuda/launch.cuh"

namespace roiops {

// Pyramid levels one launch can read (FPN uses 4 or 5).
constexpr int64_t kMaxLevelsCuda = 8;

// A channel plane as the sample walks read it: pixel (h, w) at data[h * row + w * col].
template <typename T>
struct MapPlane {
  T* data;
  int64_t row, col;
  int64_t height, width;
};

// The pyramid as the kernels see it, passed by value. T is `const scalar_t` (forward) or acc_t
// (gradient buffers).
template <typename T>
struct LevelMaps {
  T* data[kMaxLevelsCuda];
  StridesNCHW strides[kMaxLevelsCuda];
  int64_t height[kMaxLevelsCuda];
  int64_t width[kMaxLevelsCuda];
  double spatial_scale[kMaxLevelsCuda];
  int64_t count;

  // One channel of one image of one level.
  __device__ MapPlane<T> plane(int64_t level, int64_t image, int64_t channel) const;
};

template <typename T>
__device__ inline MapPlane<T> LevelMaps<T>::plane(int64_t level, int64_t image, int64_t channel) const {
  const StridesNCHW& st = strides[level];
  return {data[level] + image * st.n + channel * st.c, st.h, st.w, height[level], width[level]};
}

struct PoolShape {
  int64_t batch, channels, pooled_height, pooled_width, sampling_ratio;
  bool aligned;
};

// One RoI, resolved once: its image, its level and the sampling geometry of both axes.
template <typename acc_t>
struct RoiAlignRoi {
  bool valid;  // finite box and integer batch index in [0, batch); else it pools to 0, no gradient
  int64_t batch_index, level;
  RoiAxis<acc_t> ay, ax;
  acc_t inv_count;
};

template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
__device__ inline RoiAlignRoi<acc_t> load_roi_align_roi(const scalar_t* __restrict__ rois,
                                                        const int64_t* __restrict__ levels, int64_t k,
                                                        const double* spatial_scales, int64_t num_levels,
                                                        const PoolShape& s) {
  RoiAlignRoi<acc_t> r;
  const scalar_t* roi = rois + 5 * k;
  const acc_t b = static_cast<acc_t>(roi[0]);
  const acc_t x1 = static_cast<acc_t>(roi[1]), y1 = static_cast<acc_t>(roi[2]);
  const acc_t x2 = static_cast<acc_t>(roi[3]), y2 = static_cast<acc_t>(roi[4]);
  // The wrapper rejects bad batch indices on the host (the CPU kernel raises); a direct call must
  // still not read out of bounds, so such a RoI is treated like a non-finite one.
  const bool batch_ok = is_batch_index(b, s.batch);
  r.valid = batch_ok && roi_is_finite(x1, y1, x2, y2);
  r.batch_index = batch_ok ? static_cast<int64_t>(b) : 0;
  const int64_t level = levels != nullptr ? levels[k] : 0;
  r.level = level < 0 ? 0 : level >= num_levels ? num_levels - 1 : level;
  const acc_t scale = static_cast<acc_t>(spatial_scales[r.level]);
  r.ay = roi_align_axis(y1, y2, scale, s.pooled_height, s.sampling_ratio, s.aligned);
  r.ax = roi_align_axis(x1, x2, scale, s.pooled_width, s.sampling_ratio, s.aligned);
  r.inv_count = roi_align_inv_count(r.ay, r.ax);
  return r;
}

// A sample outside [-1, size] has both weights 0; one inside has weights summing to 1.
template <typename acc_t>
__device__ inline bool contributes(const AxisSample<acc_t>& s) {
  return s.w_low != acc_t(0) || s.w_high != acc_t(0);
}

// The grid-stride loop of the per-element kernels: for every element of the pooled [K, C, PH, PW]
// tensor that this thread owns (linear index idx in the memory order kChannelsLast names, so that
// consecutive threads touch consecutive addresses), calls fn(idx, p, r) with its coordinates p and
// its RoI r resolved on `maps`.
template <bool kChannelsLast, typename T, typename scalar_t, typename Fn>
__device__ inline void for_each_pooled_element(const LevelMaps<T>& maps, const scalar_t* __restrict__ rois,
                                               const int64_t* __restrict__ levels, int64_t num_rois,
                                               const PoolShape& s, Fn fn) {
  const int64_t total = num_rois * s.channels * s.pooled_height * s.pooled_width;
  for (const int64_t idx : grid_stride_range(total)) {
    const PooledIndex p = decode_pooled_index<kChannelsLast>(idx, s.channels, s.pooled_height, s.pooled_width);
    fn(idx, p, load_roi_align_roi(rois, levels, p.roi, maps.spatial_scale, maps.count, s));
  }
}

// The sample walk of the RoIAlign kernels that visit a bin's samples (all but the deterministic
// gather, which visits the samples that reach a pixel): the samples of bin (ph, pw) of RoI r that
// land on a height x width map, in the CPU's order: rows of samples, then the samples along each
// row. row(iy, sy) comes before the samples of sample row iy, sample(sy, ix, sx) for each of them,
// row_done(sy) after them. Samples off the map contribute nothing and are skipped.
template <typename acc_t, typename RowFn, typename SampleFn, typename RowDoneFn>
__device__ __forceinline__ void walk_bin_samples(const RoiAlignRoi<acc_t>& r, int64_t ph, int64_t pw, int64_t height,
                                                 int64_t width, RowFn row, SampleFn sample, RowDoneFn row_done) {
  int64_t iy0, iy1, ix0, ix1;
  sample_index_range(r.ay, ph, height, &iy0, &iy1);
  sample_index_range(r.ax, pw, width, &ix0, &ix1);
  for (int64_t iy = iy0; iy < iy1; ++iy) {
    const AxisSample<acc_t> sy = bilinear_axis(sample_position(r.ay, ph, iy), height);
    if (!contributes(sy)) {
      continue;
    }
    row(iy, sy);
    for (int64_t ix = ix0; ix < ix1; ++ix) {
      const AxisSample<acc_t> sx = bilinear_axis(sample_position(r.ax, pw, ix), width);
      if (!contributes(sx)) {
        continue;
      }
      sample(sy, ix, sx);
    }
    row_done(sy);
  }
}

// The walk without a step after each row.
template <typename acc_t, typename RowFn, typename SampleFn>
__device__ __forceinline__ void walk_bin_samples(const RoiAlignRoi<acc_t>& r, int64_t ph, int64_t pw, int64_t height,
                                                 int64_t width, RowFn row, SampleFn sample) {
  walk_bin_samples(r, ph, pw, height, width, row, sample, [](const AxisSample<acc_t>&) {});
}

// The sum of the bilinear samples of bin (ph, pw) of RoI r on plane m, in the CPU's order: along x
// for both map rows a sample row reads, then along y. roi_align's and ps_roi_align's forward: this
// times r.inv_count.
template <typename T, typename acc_t>
__device__ __forceinline__ acc_t bin_sample_sum(const MapPlane<T>& m, const RoiAlignRoi<acc_t>& r, int64_t ph,
                                                int64_t pw) {
  T* row_lo = nullptr;
  T* row_hi = nullptr;
  acc_t sum = 0, along_lo = 0, along_hi = 0;
  walk_bin_samples(
      r, ph, pw, m.height, m.width,
      [&](int64_t, const AxisSample<acc_t>& sy) {
        row_lo = m.data + sy.low * m.row;
        row_hi = m.data + sy.high * m.row;
        along_lo = 0;
        along_hi = 0;
      },
      [&](const AxisSample<acc_t>&, int64_t, const AxisSample<acc_t>& sx) {
        const int64_t xl = sx.low * m.col, xh = sx.high * m.col;
        along_lo += sx.w_low * static_cast<acc_t>(row_lo[xl]) + sx.w_high * static_cast<acc_t>(row_lo[xh]);
        along_hi += sx.w_low * static_cast<acc_t>(row_hi[xl]) + sx.w_high * static_cast<acc_t>(row_hi[xh]);
      },
      [&](const AxisSample<acc_t>& sy) { sum += sy.w_low * along_lo + sy.w_high * along_hi; });
  return sum;
}

// Adds gb times each sample's bilinear weights to the four pixels of m it reads, for every sample of
// bin (ph, pw) of RoI r, with atomics: roi_align's and ps_roi_align's scatter backward (gb: the
// bin's gradient over the sample count, bin_grad).
template <typename acc_t>
__device__ __forceinline__ void scatter_bin_samples(const MapPlane<acc_t>& m, const RoiAlignRoi<acc_t>& r, int64_t ph,
                                                    int64_t pw, acc_t gb) {
  acc_t* row_lo = nullptr;
  acc_t* row_hi = nullptr;
  acc_t g_lo = 0, g_hi = 0;
  walk_bin_samples(
      r, ph, pw, m.height, m.width,
      [&](int64_t, const AxisSample<acc_t>& sy) {
        row_lo = m.data + sy.low * m.row;
        row_hi = m.data + sy.high * m.row;
        g_lo = gb * sy.w_low;
        g_hi = gb * sy.w_high;
      },
      [&](const AxisSample<acc_t>&, int64_t, const AxisSample<acc_t>& sx) {
        const int64_t xl = sx.low * m.col, xh = sx.high * m.col;
        gpuAtomicAdd(row_lo + xl, g_lo * sx.w_low);
        gpuAtomicAdd(row_lo + xh, g_lo * sx.w_high);
        gpuAtomicAdd(row_hi + xl, g_hi * sx.w_low);
        gpuAtomicAdd(row_hi + xh, g_hi * sx.w_high);
      });
}

// grad[k, c, ph, pw] (element strides gs) divided by the RoI's sample count: what each sample of
// the bin receives.
template <typename scalar_t, typename acc_t>
__device__ inline acc_t bin_grad(const scalar_t* __restrict__ grad, const StridesNCHW& gs, int64_t k, int64_t c,
                                 int64_t ph, int64_t pw, acc_t inv_count) {
  return static_cast<acc_t>(grad[k * gs.n + c * gs.c + ph * gs.h + pw * gs.w]) * inv_count;
}

// for_each_pooled_element for the kernels that scatter a pooled gradient (grad, element strides gs)
// into maps: calls fn(p, r, gb) with gb = bin_grad, skipping invalid RoIs and zero gradients, which
// add nothing (as on the CPU).
template <bool kChannelsLast, typename T, typename scalar_t, typename Fn>
__device__ inline void for_each_pooled_grad(const LevelMaps<T>& maps, const scalar_t* __restrict__ grad,
                                            const StridesNCHW& gs, const scalar_t* __restrict__ rois,
                                            const int64_t* __restrict__ levels, int64_t num_rois, const PoolShape& s,
                                            Fn fn) {
  using acc_t = at::opmath_type<scalar_t>;
  for_each_pooled_element<kChannelsLast>(maps, rois, levels, num_rois, s, [&](int64_t, const PooledIndex& p,
                                                                              const RoiAlignRoi<acc_t>& r) {
    if (!r.valid) {
      return;
    }
    const acc_t gb = bin_grad(grad, gs, p.roi, p.channel, p.ph, p.pw, r.inv_count);
    if (gb != acc_t(0)) {
      fn(p, r, gb);
    }
  });
}

// The maps of every level, checked against what one launch can take.
template <typename T>
LevelMaps<T> level_maps(const char* op, const std::vector<T*>& data, const std::vector<StridesNCHW>& strides,
                        const std::vector<int64_t>& heights, const std::vector<int64_t>& widths,
                        const std::vector<double>& spatial_scales) {
  const int64_t count = static_cast<int64_t>(heights.size());
  TORCH_CHECK_VALUE(count >= 1 && count <= kMaxLevelsCuda, op, ": between 1 and ", kMaxLevelsCuda,
                    " feature maps are supported on CUDA, got ", count);
  TORCH_CHECK_VALUE(spatial_scales.size() == heights.size(), op, ": need one spatial scale per feature map");
  check_spatial_scales(op, spatial_scales);
  LevelMaps<T> maps{};
  maps.count = count;
  for (int64_t l = 0; l < count; ++l) {
    maps.data[l] = data[l];
    maps.strides[l] = strides[l];
    maps.height[l] = heights[l];
    maps.width[l] = widths[l];
    maps.spatial_scale[l] = spatial_scales[l];
  }
  return maps;
}

// The maps of `tensors` (4-d, read or written in place through their strides): T = const scalar_t
// for maps the kernels read, acc_t for the gradient buffers they write.
template <typename T>
LevelMaps<T> maps_of(const char* op, const std::vector<at::Tensor>& tensors,
                     const std::vector<double>& spatial_scales) {
  std::vector<T*> data;
  std::vector<StridesNCHW> strides;
  std::vector<int64_t> heights, widths;
  for (const at::Tensor& t : tensors) {
    if constexpr (std::is_const_v<T>) {
      data.push_back(t.const_data_ptr<std::remove_const_t<T>>());
    } else {
      data.push_back(t.mutable_data_ptr<T>());
    }
    strides.push_back(strides_of(t));
    heights.push_back(t.size(2));
    widths.push_back(t.size(3));
  }
  return level_maps(op, data, strides, heights, widths, spatial_scales);
}

}  // namespace roiops
