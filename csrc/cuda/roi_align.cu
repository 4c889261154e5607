// RoIAlign (He et al., Mask R-CNN) on CUDA: forward, backward to the input (atomics, or a
// deterministic gather), backward to the box coordinates and the second derivatives through that. The host drivers serve one map
// (roi_align) and a whole FPN pyramid in one launch (multi_scale_roi_align.cu).
//
// The per-RoI geometry and per-sample bilinear arithmetic are common/roi_align_math.h, the very
// functions the CPU kernels run, and the sums are formed in the CPU's NCHW order, so what the CPU
// tests prove about the numerics holds here.
//
// Layouts: every map is read through its strides, so NCHW and channels_last are read in place
// (no copy). Outputs follow the CPU's rule for the memory format; threads are mapped so that
// consecutive threads write consecutive addresses in either format.
//
// Backward to the input: the ordinary path scatters each sample's four bilinear contributions with
// atomicAdd into an accumulation buffer (float32 for the half types, rounded once at the end).
// Under torch.use_deterministic_algorithms(True) it gathers instead: each thread owns grad_input
// elements and sums, in a fixed RoI and sample order, every contribution that lands on them, so
// the result is bitwise repeatable; it equals the atomic result up to summation order.

#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/Atomic.cuh>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <type_traits>

#include "common/checks.h"
#include "common/roi_align_math.h"
#include "cuda/roi_align_kernels.cuh"
#include "cuda/roi_launch.cuh"

namespace roiops {
namespace {

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
};

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
  const bool batch_ok = b >= acc_t(0) && b < static_cast<acc_t>(s.batch) &&
                        b == static_cast<acc_t>(static_cast<int64_t>(b));
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

// ---- forward ------------------------------------------------------------------------------------

template <typename scalar_t, bool kChannelsLast>
__global__ void roi_align_forward_kernel_cuda(LevelMaps<const scalar_t> maps, const scalar_t* __restrict__ rois,
                                              const int64_t* __restrict__ levels, int64_t num_rois, PoolShape s,
                                              scalar_t* __restrict__ output) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = num_rois * s.channels * s.pooled_height * s.pooled_width;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const PooledIndex p = decode_pooled_index<kChannelsLast>(idx, s.channels, s.pooled_height, s.pooled_width);
    const RoiAlignRoi<acc_t> r = load_roi_align_roi(rois, levels, p.roi, maps.spatial_scale, maps.count, s);
    if (!r.valid) {
      output[idx] = scalar_t(0);
      continue;
    }
    const StridesNCHW st = maps.strides[r.level];
    const int64_t height = maps.height[r.level], width = maps.width[r.level];
    const scalar_t* plane = maps.data[r.level] + r.batch_index * st.n + p.channel * st.c;
    int64_t iy0, iy1, ix0, ix1;
    sample_index_range(r.ay, p.ph, height, &iy0, &iy1);
    sample_index_range(r.ax, p.pw, width, &ix0, &ix1);
    acc_t sum = 0;
    for (int64_t iy = iy0; iy < iy1; ++iy) {
      const AxisSample<acc_t> sy = bilinear_axis(sample_position(r.ay, p.ph, iy), height);
      if (!contributes(sy)) {
        continue;
      }
      const scalar_t* row_lo = plane + sy.low * st.h;
      const scalar_t* row_hi = plane + sy.high * st.h;
      acc_t along_lo = 0, along_hi = 0;
      for (int64_t ix = ix0; ix < ix1; ++ix) {
        const AxisSample<acc_t> sx = bilinear_axis(sample_position(r.ax, p.pw, ix), width);
        if (!contributes(sx)) {
          continue;
        }
        const int64_t xl = sx.low * st.w, xh = sx.high * st.w;
        along_lo += sx.w_low * static_cast<acc_t>(row_lo[xl]) + sx.w_high * static_cast<acc_t>(row_lo[xh]);
        along_hi += sx.w_low * static_cast<acc_t>(row_hi[xl]) + sx.w_high * static_cast<acc_t>(row_hi[xh]);
      }
      sum += sy.w_low * along_lo + sy.w_high * along_hi;
    }
    output[idx] = static_cast<scalar_t>(sum * r.inv_count);
  }
}

// ---- backward to the input, atomics -------------------------------------------------------------

template <typename scalar_t, bool kChannelsLast>
__global__ void roi_align_backward_atomic_kernel_cuda(const scalar_t* __restrict__ grad, StridesNCHW gs,
                                                      const scalar_t* __restrict__ rois,
                                                      const int64_t* __restrict__ levels, int64_t num_rois,
                                                      PoolShape s, LevelMaps<at::opmath_type<scalar_t>> grads) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = num_rois * s.channels * s.pooled_height * s.pooled_width;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const PooledIndex p = decode_pooled_index<kChannelsLast>(idx, s.channels, s.pooled_height, s.pooled_width);
    const RoiAlignRoi<acc_t> r = load_roi_align_roi(rois, levels, p.roi, grads.spatial_scale, grads.count, s);
    if (!r.valid) {
      continue;
    }
    const acc_t gb = static_cast<acc_t>(grad[p.roi * gs.n + p.channel * gs.c + p.ph * gs.h + p.pw * gs.w]) *
                     r.inv_count;
    if (gb == acc_t(0)) {
      continue;  // as the CPU kernel: nothing to add
    }
    const StridesNCHW st = grads.strides[r.level];
    const int64_t height = grads.height[r.level], width = grads.width[r.level];
    acc_t* plane = grads.data[r.level] + r.batch_index * st.n + p.channel * st.c;
    int64_t iy0, iy1, ix0, ix1;
    sample_index_range(r.ay, p.ph, height, &iy0, &iy1);
    sample_index_range(r.ax, p.pw, width, &ix0, &ix1);
    for (int64_t iy = iy0; iy < iy1; ++iy) {
      const AxisSample<acc_t> sy = bilinear_axis(sample_position(r.ay, p.ph, iy), height);
      if (!contributes(sy)) {
        continue;
      }
      acc_t* row_lo = plane + sy.low * st.h;
      acc_t* row_hi = plane + sy.high * st.h;
      const acc_t g_lo = gb * sy.w_low, g_hi = gb * sy.w_high;
      for (int64_t ix = ix0; ix < ix1; ++ix) {
        const AxisSample<acc_t> sx = bilinear_axis(sample_position(r.ax, p.pw, ix), width);
        if (!contributes(sx)) {
          continue;
        }
        const int64_t xl = sx.low * st.w, xh = sx.high * st.w;
        gpuAtomicAdd(row_lo + xl, g_lo * sx.w_low);
        gpuAtomicAdd(row_lo + xh, g_lo * sx.w_high);
        gpuAtomicAdd(row_hi + xl, g_hi * sx.w_low);
        gpuAtomicAdd(row_hi + xh, g_hi * sx.w_high);
      }
    }
  }
}

// ---- backward to the input, deterministic gather ------------------------------------------------
//
// A thread block owns a kTile x kTile tile of one image of one level, all channels. It lists, in
// increasing RoI order, the RoIs of that image and level whose samples can reach the tile (their
// geometry cached in shared memory); then each thread, for each gradient element it alone owns,
// walks that list and, per RoI, only the samples that can reach its pixel: a sample at y touches
// rows floor(y) and floor(y) + 1, so only y in [h - 1, h + 1] matter, widened at the borders
// where samples are clamped onto the edge pixel. Whether a sample reaches the pixel, and with which
// weight, is decided by the same bilinear_axis call as the forward and the atomic path, so the
// same contributions are summed, in a fixed order.

constexpr int kTile = 8;
constexpr int kGatherThreads = 256;  // also the number of RoIs examined per pass

// The global sample indices [*first, *last) (s = bin * grid + i over the whole RoI; the position
// increases with s) whose position can fall in [lo, hi]: a superset, each is tested exactly.
// Solved in double with a margin for the rounding of positions computed in acc_t; a degenerate
// step gives every sample.
template <typename acc_t>
__device__ inline void samples_reaching(const RoiAxis<acc_t>& axis, int64_t pooled, double lo, double hi,
                                        int64_t* first, int64_t* last) {
  const int64_t n = pooled * axis.grid;
  *first = 0;
  *last = n;
  const double step = static_cast<double>(axis.bin_size) / static_cast<double>(axis.grid);
  const double start = static_cast<double>(axis.start);
  if (!(step > 0.0)) {
    return;
  }
  const double margin = 1e-5 * (fabs(start) + step * static_cast<double>(n) + 1.0);
  const double f = ::floor((lo - margin - start) / step - 0.5) - 1.0;
  const double l = ::ceil((hi + margin - start) / step - 0.5) + 2.0;
  const double nd = static_cast<double>(n);
  *first = f <= 0.0 ? 0 : f >= nd ? n : static_cast<int64_t>(f);
  *last = l <= 0.0 ? 0 : l >= nd ? n : static_cast<int64_t>(l);
  if (*last < *first) {
    *last = *first;
  }
}

// Whether the samples of an axis, spanning [start, start + pooled * bin_size], can reach pixels
// [p0, p1] of a map with `size` pixels. Conservative by a pixel and a relative margin.
template <typename acc_t>
__device__ inline bool axis_reaches(const RoiAxis<acc_t>& axis, int64_t pooled, int64_t p0, int64_t p1,
                                    int64_t size) {
  if (axis.grid <= 0) {
    return false;
  }
  const double a = static_cast<double>(axis.start);
  const double b = a + static_cast<double>(axis.bin_size) * static_cast<double>(pooled);
  const double margin = 1.0 + 1e-5 * (fabs(a) + fabs(b));
  const double lo = a < b ? a : b, hi = a < b ? b : a;
  const bool below = hi < static_cast<double>(p0) - 1.0 - margin && p0 > 0;
  const bool above = lo > static_cast<double>(p1) + 1.0 + margin && p1 < size - 1;
  return !below && !above;
}

// Whether a contributing sample touches `pixel`, and its weight there (both weights when the
// sample is clamped onto the border pixel, low == high).
template <typename acc_t>
__device__ inline bool touches(const AxisSample<acc_t>& s, int64_t pixel) {
  return contributes(s) && (s.low == pixel || s.high == pixel);
}

template <typename acc_t>
__device__ inline acc_t weight_at(const AxisSample<acc_t>& s, int64_t pixel) {
  return (s.low == pixel ? s.w_low : acc_t(0)) + (s.high == pixel ? s.w_high : acc_t(0));
}

template <typename scalar_t, bool kChannelsLast>
__global__ void __launch_bounds__(kGatherThreads)
    roi_align_backward_gather_kernel_cuda(const scalar_t* __restrict__ grad, StridesNCHW gs,
                                          const scalar_t* __restrict__ rois, const int64_t* __restrict__ levels,
                                          int64_t num_rois, PoolShape s, LevelMaps<at::opmath_type<scalar_t>> grads,
                                          int64_t level) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ int64_t listed_index[kGatherThreads];
  __shared__ RoiAxis<acc_t> listed_ay[kGatherThreads];
  __shared__ RoiAxis<acc_t> listed_ax[kGatherThreads];
  __shared__ acc_t listed_inv_count[kGatherThreads];
  __shared__ int warp_counts[kGatherThreads / 32];

  const int64_t height = grads.height[level], width = grads.width[level];
  const StridesNCHW st = grads.strides[level];
  acc_t* const out = grads.data[level];
  const int64_t tiles_w = (width + kTile - 1) / kTile;
  const int64_t image = blockIdx.y;
  const int64_t tile_h0 = (blockIdx.x / tiles_w) * kTile;
  const int64_t tile_w0 = (blockIdx.x % tiles_w) * kTile;
  const int64_t tile_h1 = std::min<int64_t>(tile_h0 + kTile, height) - 1;  // inclusive
  const int64_t tile_w1 = std::min<int64_t>(tile_w0 + kTile, width) - 1;
  const int64_t items = s.channels * kTile * kTile;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;

  for (int64_t chunk = 0; chunk < num_rois; chunk += kGatherThreads) {
    // 1. List this chunk's RoIs that reach the tile, in RoI order (warp ballots + a warp prefix).
    const int64_t k = chunk + threadIdx.x;
    bool listed = false;
    RoiAlignRoi<acc_t> r{};
    if (k < num_rois) {
      r = load_roi_align_roi(rois, levels, k, grads.spatial_scale, grads.count, s);
      listed = r.valid && r.batch_index == image && r.level == level &&
               axis_reaches(r.ay, s.pooled_height, tile_h0, tile_h1, height) &&
               axis_reaches(r.ax, s.pooled_width, tile_w0, tile_w1, width);
    }
    const unsigned ballot = __ballot_sync(0xffffffffu, listed);
    if (lane == 0) {
      warp_counts[warp] = __popc(ballot);
    }
    __syncthreads();
    int count = 0, offset = __popc(ballot & ((1u << lane) - 1u));
    for (int w = 0; w < kGatherThreads / 32; ++w) {
      offset += w < warp ? warp_counts[w] : 0;
      count += warp_counts[w];
    }
    if (listed) {
      listed_index[offset] = k;
      listed_ay[offset] = r.ay;
      listed_ax[offset] = r.ax;
      listed_inv_count[offset] = r.inv_count;
    }
    __syncthreads();

    // 2. Each thread accumulates into the gradient elements it alone owns.
    for (int64_t item = threadIdx.x; count > 0 && item < items; item += blockDim.x) {
      int64_t c, local;
      if (kChannelsLast) {
        c = item % s.channels;
        local = item / s.channels;
      } else {
        c = item / (kTile * kTile);
        local = item % (kTile * kTile);
      }
      const int64_t h = tile_h0 + local / kTile;
      const int64_t w = tile_w0 + local % kTile;
      if (h > tile_h1 || w > tile_w1) {
        continue;
      }
      // Positions that can reach row h / column w (the border pixels also take the clamped ones).
      const double y_lo = h == 0 ? -1.0 : static_cast<double>(h - 1);
      const double y_hi = h == height - 1 ? static_cast<double>(height) : static_cast<double>(h + 1);
      const double x_lo = w == 0 ? -1.0 : static_cast<double>(w - 1);
      const double x_hi = w == width - 1 ? static_cast<double>(width) : static_cast<double>(w + 1);
      acc_t sum = 0;
      for (int e = 0; e < count; ++e) {
        const RoiAxis<acc_t> ay = listed_ay[e];
        const RoiAxis<acc_t> ax = listed_ax[e];
        int64_t sy0, sy1, sx0, sx1;
        samples_reaching(ay, s.pooled_height, y_lo, y_hi, &sy0, &sy1);
        samples_reaching(ax, s.pooled_width, x_lo, x_hi, &sx0, &sx1);
        const scalar_t* g = grad + listed_index[e] * gs.n + c * gs.c;
        for (int64_t s_y = sy0; s_y < sy1; ++s_y) {
          const int64_t ph = s_y / ay.grid;
          const AxisSample<acc_t> sy = bilinear_axis(sample_position(ay, ph, s_y - ph * ay.grid), height);
          if (!touches(sy, h)) {
            continue;
          }
          const acc_t wy = weight_at(sy, h);
          for (int64_t s_x = sx0; s_x < sx1; ++s_x) {
            const int64_t pw = s_x / ax.grid;
            const AxisSample<acc_t> sx = bilinear_axis(sample_position(ax, pw, s_x - pw * ax.grid), width);
            if (!touches(sx, w)) {
              continue;
            }
            const acc_t gb = static_cast<acc_t>(g[ph * gs.h + pw * gs.w]) * listed_inv_count[e];
            if (gb != acc_t(0)) {
              sum += (gb * wy) * weight_at(sx, w);
            }
          }
        }
      }
      out[image * st.n + c * st.c + h * st.h + w * st.w] += sum;
    }
    __syncthreads();  // the list is rebuilt for the next chunk
  }
}

// ---- backward to the box coordinates ------------------------------------------------------------
//
// d(sum(grad * roi_align(input, rois)))/d(rois): one block per RoI; each thread sums its share of
// (channel, bin) pairs, then a fixed tree reduction combines them, so the result is deterministic.

constexpr int kRoisThreads = 256;

// d(position)/d(box lo) and d(position)/d(box hi) of one sample along one axis.
template <typename acc_t>
struct SampleSlopes {
  acc_t d_lo, d_hi;
};

// The walk of the per-RoI box-gradient kernels: for every sample of bin (ph, pw) of RoI r, calls
// fn(ty, tx, slopes_y, slopes_x, v_ll, v_lh, v_hl, v_hh) with its taps, its position slopes and
// the four corner values of `plane` (element strides st.h, st.w), in acc_t. The CPU's
// for_each_sample_corners, with the taps computed on the fly.
template <typename acc_t, typename scalar_t, typename Fn>
__device__ inline void for_each_sample_corners(const RoiAlignRoi<acc_t>& r, const scalar_t* plane,
                                               const StridesNCHW& st, int64_t height, int64_t width, acc_t scale,
                                               int64_t ph, int64_t pw, Fn fn) {
  int64_t iy0, iy1, ix0, ix1;
  sample_index_range(r.ay, ph, height, &iy0, &iy1);
  sample_index_range(r.ax, pw, width, &ix0, &ix1);
  for (int64_t iy = iy0; iy < iy1; ++iy) {
    const AxisSample<acc_t> ty = bilinear_axis(sample_position(r.ay, ph, iy), height);
    if (!contributes(ty)) {
      continue;
    }
    SampleSlopes<acc_t> sy;
    sample_position_slopes(r.ay, scale, ph, iy, &sy.d_lo, &sy.d_hi);
    const scalar_t* row_lo = plane + ty.low * st.h;
    const scalar_t* row_hi = plane + ty.high * st.h;
    for (int64_t ix = ix0; ix < ix1; ++ix) {
      const AxisSample<acc_t> tx = bilinear_axis(sample_position(r.ax, pw, ix), width);
      if (!contributes(tx)) {
        continue;
      }
      SampleSlopes<acc_t> sx;
      sample_position_slopes(r.ax, scale, pw, ix, &sx.d_lo, &sx.d_hi);
      fn(ty, tx, sy, sx, static_cast<acc_t>(row_lo[tx.low * st.w]), static_cast<acc_t>(row_lo[tx.high * st.w]),
         static_cast<acc_t>(row_hi[tx.low * st.w]), static_cast<acc_t>(row_hi[tx.high * st.w]));
    }
  }
}

// Sums every thread's (x1, y1, x2, y2) over the block in a fixed tree (deterministic) and writes
// (0, x1, y1, x2, y2) to out[0 .. 5). Ends with a barrier, so partial can be reused.
template <typename acc_t>
__device__ inline void block_sum_box_row(acc_t (*partial)[kRoisThreads], acc_t x1, acc_t y1, acc_t x2, acc_t y2,
                                         acc_t* out) {
  partial[0][threadIdx.x] = x1;
  partial[1][threadIdx.x] = y1;
  partial[2][threadIdx.x] = x2;
  partial[3][threadIdx.x] = y2;
  __syncthreads();
  for (int half = kRoisThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      for (int j = 0; j < 4; ++j) {
        partial[j][threadIdx.x] += partial[j][threadIdx.x + half];
      }
    }
    __syncthreads();
  }
  if (threadIdx.x < 5) {
    out[threadIdx.x] = threadIdx.x == 0 ? acc_t(0) : partial[threadIdx.x - 1][0];
  }
  __syncthreads();
}

template <typename scalar_t>
__global__ void __launch_bounds__(kRoisThreads)
    roi_align_backward_rois_kernel_cuda(const scalar_t* __restrict__ grad, StridesNCHW gs,
                                        LevelMaps<const scalar_t> maps, const scalar_t* __restrict__ rois,
                                        const int64_t* __restrict__ levels, int64_t num_rois, PoolShape s,
                                        at::opmath_type<scalar_t>* __restrict__ grad_rois) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t partial[4][kRoisThreads];
  for (int64_t k = blockIdx.x; k < num_rois; k += gridDim.x) {
    const RoiAlignRoi<acc_t> r = load_roi_align_roi(rois, levels, k, maps.spatial_scale, maps.count, s);
    acc_t dx1 = 0, dy1 = 0, dx2 = 0, dy2 = 0;
    if (r.valid) {
      const StridesNCHW st = maps.strides[r.level];
      const int64_t height = maps.height[r.level], width = maps.width[r.level];
      const acc_t scale = static_cast<acc_t>(maps.spatial_scale[r.level]);
      const int64_t bins = s.pooled_height * s.pooled_width;
      for (int64_t item = threadIdx.x; item < s.channels * bins; item += blockDim.x) {
        const int64_t c = item / bins;
        const int64_t ph = (item % bins) / s.pooled_width;
        const int64_t pw = item % s.pooled_width;
        const acc_t gb = static_cast<acc_t>(grad[k * gs.n + c * gs.c + ph * gs.h + pw * gs.w]) * r.inv_count;
        if (gb == acc_t(0)) {
          continue;
        }
        const scalar_t* plane = maps.data[r.level] + r.batch_index * st.n + c * st.c;
        for_each_sample_corners(
            r, plane, st, height, width, scale, ph, pw,
            [&](const AxisSample<acc_t>& ty, const AxisSample<acc_t>& tx, const SampleSlopes<acc_t>& sy,
                const SampleSlopes<acc_t>& sx, acc_t v_ll, acc_t v_lh, acc_t v_hl, acc_t v_hh) {
              acc_t d_y, d_x;
              bilinear_gradient(ty, tx, v_ll, v_lh, v_hl, v_hh, &d_y, &d_x);
              dy1 += gb * d_y * sy.d_lo;
              dy2 += gb * d_y * sy.d_hi;
              dx1 += gb * d_x * sx.d_lo;
              dx2 += gb * d_x * sx.d_hi;
            });
      }
    }
    block_sum_box_row(partial, dx1, dy1, dx2, dy2, grad_rois + 5 * k);
  }
}

// ---- second derivatives through the box gradient --------------------------------------------------
//
// The quantities of the CPU's roi_align_box_second_order_per_roi / _to_input (cpu/roi_align_kernels.h
// explains them): S = <u, box gradient>, u = directions[k]. One block per RoI computes d grad
// (each (channel, bin) pair by one thread) and d rois (a fixed tree reduction, deterministic);
// d input is scattered with atomics, like the input backward.

// How far u moves the sample along an axis: d(position)/d(lo) * u_lo + d(position)/d(hi) * u_hi.
template <typename acc_t>
__device__ inline acc_t sample_move(const RoiAxis<acc_t>& axis, acc_t scale, int64_t p, int64_t i, acc_t u_lo,
                                    acc_t u_hi) {
  acc_t d_lo, d_hi;
  sample_position_slopes(axis, scale, p, i, &d_lo, &d_hi);
  return d_lo * u_lo + d_hi * u_hi;
}

template <typename scalar_t>
__global__ void __launch_bounds__(kRoisThreads)
    roi_align_box_second_order_kernel_cuda(const scalar_t* __restrict__ grad, StridesNCHW gs,
                                           LevelMaps<const scalar_t> maps, const scalar_t* __restrict__ rois,
                                           const scalar_t* __restrict__ directions,
                                           const int64_t* __restrict__ levels, int64_t num_rois, PoolShape s,
                                           scalar_t* __restrict__ d_grad, StridesNCHW ds,
                                           at::opmath_type<scalar_t>* __restrict__ d_rois) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t partial[4][kRoisThreads];
  for (int64_t k = blockIdx.x; k < num_rois; k += gridDim.x) {
    const RoiAlignRoi<acc_t> r = load_roi_align_roi(rois, levels, k, maps.spatial_scale, maps.count, s);
    const scalar_t* u = directions + 5 * k;
    const acc_t ux1 = static_cast<acc_t>(u[1]), uy1 = static_cast<acc_t>(u[2]);
    const acc_t ux2 = static_cast<acc_t>(u[3]), uy2 = static_cast<acc_t>(u[4]);
    const StridesNCHW st = maps.strides[r.level];
    const int64_t height = maps.height[r.level], width = maps.width[r.level];
    const acc_t scale = static_cast<acc_t>(maps.spatial_scale[r.level]);
    const int64_t bins = s.pooled_height * s.pooled_width;
    acc_t rx1 = 0, ry1 = 0, rx2 = 0, ry2 = 0;
    for (int64_t item = threadIdx.x; item < s.channels * bins; item += blockDim.x) {
      const int64_t c = item / bins;
      const int64_t ph = (item % bins) / s.pooled_width;
      const int64_t pw = item % s.pooled_width;
      acc_t along = 0;
      if (r.valid) {
        const acc_t gb = static_cast<acc_t>(grad[k * gs.n + c * gs.c + ph * gs.h + pw * gs.w]) * r.inv_count;
        const scalar_t* plane = maps.data[r.level] + r.batch_index * st.n + c * st.c;
        for_each_sample_corners(
            r, plane, st, height, width, scale, ph, pw,
            [&](const AxisSample<acc_t>& ty, const AxisSample<acc_t>& tx, const SampleSlopes<acc_t>& sy,
                const SampleSlopes<acc_t>& sx, acc_t v_ll, acc_t v_lh, acc_t v_hl, acc_t v_hh) {
              const acc_t move_y = sy.d_lo * uy1 + sy.d_hi * uy2;
              const acc_t move_x = sx.d_lo * ux1 + sx.d_hi * ux2;
              acc_t d_y, d_x;
              bilinear_gradient(ty, tx, v_ll, v_lh, v_hl, v_hh, &d_y, &d_x);
              along += d_y * move_y + d_x * move_x;
              const acc_t cross = gb * bilinear_cross_derivative(ty, tx, v_ll, v_lh, v_hl, v_hh);
              ry1 += cross * move_x * sy.d_lo;
              ry2 += cross * move_x * sy.d_hi;
              rx1 += cross * move_y * sx.d_lo;
              rx2 += cross * move_y * sx.d_hi;
            });
      }
      d_grad[k * ds.n + c * ds.c + ph * ds.h + pw * ds.w] = static_cast<scalar_t>(along * r.inv_count);
    }
    block_sum_box_row(partial, rx1, ry1, rx2, ry2, d_rois + 5 * k);
  }
}

template <typename scalar_t>
__global__ void roi_align_box_second_order_to_input_kernel_cuda(const scalar_t* __restrict__ grad, StridesNCHW gs,
                                                                const scalar_t* __restrict__ rois,
                                                                const scalar_t* __restrict__ directions,
                                                                const int64_t* __restrict__ levels, int64_t num_rois,
                                                                PoolShape s,
                                                                LevelMaps<at::opmath_type<scalar_t>> d_maps) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = num_rois * s.channels * s.pooled_height * s.pooled_width;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const PooledIndex p = decode_pooled_index<false>(idx, s.channels, s.pooled_height, s.pooled_width);
    const RoiAlignRoi<acc_t> r = load_roi_align_roi(rois, levels, p.roi, d_maps.spatial_scale, d_maps.count, s);
    if (!r.valid) {
      continue;
    }
    const acc_t gb = static_cast<acc_t>(grad[p.roi * gs.n + p.channel * gs.c + p.ph * gs.h + p.pw * gs.w]) *
                     r.inv_count;
    if (gb == acc_t(0)) {
      continue;
    }
    const scalar_t* u = directions + 5 * p.roi;
    const acc_t ux1 = static_cast<acc_t>(u[1]), uy1 = static_cast<acc_t>(u[2]);
    const acc_t ux2 = static_cast<acc_t>(u[3]), uy2 = static_cast<acc_t>(u[4]);
    const StridesNCHW st = d_maps.strides[r.level];
    const int64_t height = d_maps.height[r.level], width = d_maps.width[r.level];
    const acc_t scale = static_cast<acc_t>(d_maps.spatial_scale[r.level]);
    acc_t* plane = d_maps.data[r.level] + r.batch_index * st.n + p.channel * st.c;
    int64_t iy0, iy1, ix0, ix1;
    sample_index_range(r.ay, p.ph, height, &iy0, &iy1);
    sample_index_range(r.ax, p.pw, width, &ix0, &ix1);
    for (int64_t iy = iy0; iy < iy1; ++iy) {
      const AxisSample<acc_t> ty = bilinear_axis(sample_position(r.ay, p.ph, iy), height);
      if (!contributes(ty)) {
        continue;
      }
      const acc_t move_y = sample_move(r.ay, scale, p.ph, iy, uy1, uy2);
      acc_t* row_lo = plane + ty.low * st.h;
      acc_t* row_hi = plane + ty.high * st.h;
      for (int64_t ix = ix0; ix < ix1; ++ix) {
        const AxisSample<acc_t> tx = bilinear_axis(sample_position(r.ax, p.pw, ix), width);
        if (!contributes(tx)) {
          continue;
        }
        acc_t w[4];
        bilinear_direction_weights(ty, tx, move_y, sample_move(r.ax, scale, p.pw, ix, ux1, ux2), w);
        gpuAtomicAdd(row_lo + tx.low * st.w, gb * w[0]);
        gpuAtomicAdd(row_lo + tx.high * st.w, gb * w[1]);
        gpuAtomicAdd(row_hi + tx.low * st.w, gb * w[2]);
        gpuAtomicAdd(row_hi + tx.high * st.w, gb * w[3]);
      }
    }
  }
}

// ---- host helpers -------------------------------------------------------------------------------

void check_levels_cuda(const char* op, const at::Tensor& levels, int64_t num_rois, const at::Tensor& like) {
  if (levels.defined()) {
    TORCH_CHECK(levels.scalar_type() == at::kLong && levels.dim() == 1 && levels.size(0) == num_rois &&
                    levels.is_contiguous() && levels.device() == like.device(),
                op, ": levels must be a contiguous int64 [K] tensor on the input's device");
  }
}

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

}  // namespace

bool use_channels_last_cuda(const at::Tensor& input) {
  return input.dim() == 4 && !input.is_contiguous() && input.is_contiguous(at::MemoryFormat::ChannelsLast);
}

namespace {

constexpr int kCheckThreads = 1024;

// first_bad[0] = the lowest k whose batch index rois[k, 0] is not an integer in [0, batch), or
// num_rois. One block (a few thousand RoIs take microseconds); a fixed-order min reduction.
template <typename scalar_t>
__global__ void __launch_bounds__(kCheckThreads)
    first_bad_batch_index_kernel_cuda(const scalar_t* __restrict__ rois, int64_t row_stride, int64_t num_rois,
                                      int64_t batch, int64_t* __restrict__ first_bad) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ int64_t lowest[kCheckThreads];
  int64_t mine = num_rois;
  for (int64_t k = threadIdx.x; k < num_rois && mine == num_rois; k += blockDim.x) {
    const acc_t b = static_cast<acc_t>(rois[k * row_stride]);
    // The same test as the kernels' load_roi_align_roi and the CPU's build_roi_taps.
    const bool ok = b >= acc_t(0) && b < static_cast<acc_t>(batch) && b == static_cast<acc_t>(static_cast<int64_t>(b));
    mine = ok ? mine : k;
  }
  lowest[threadIdx.x] = mine;
  __syncthreads();
  for (int half = kCheckThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half && lowest[threadIdx.x + half] < lowest[threadIdx.x]) {
      lowest[threadIdx.x] = lowest[threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    *first_bad = lowest[0];
  }
}

}  // namespace

void check_batch_indices_cuda(const char* op, const at::Tensor& rois, int64_t batch_size) {
  const int64_t num_rois = rois.size(0);
  if (num_rois == 0 || c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None) {
    return;
  }
  at::Tensor first_bad = at::empty({1}, rois.options().dtype(at::kLong));
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, rois.scalar_type(), "check_batch_indices_cuda", [&] {
    first_bad_batch_index_kernel_cuda<scalar_t><<<1, kCheckThreads, 0, stream>>>(
        rois.const_data_ptr<scalar_t>(), rois.stride(0), num_rois, batch_size, first_bad.mutable_data_ptr<int64_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  // One device-to-host copy; a second only to quote the bad value in the error.
  const int64_t k = first_bad.item<int64_t>();
  TORCH_CHECK_VALUE(k == num_rois, op, ": rois[", k, ", 0] (the batch index) must be an integer in [0, ", batch_size,
                    "), got ", rois[k][0].item<double>());
}

at::Tensor roi_align_forward_levels_cuda(const char* op, const std::vector<at::Tensor>& features,
                                         const at::Tensor& rois_in, const std::vector<double>& spatial_scales,
                                         const at::Tensor& levels, int64_t pooled_height, int64_t pooled_width,
                                         int64_t sampling_ratio, bool aligned) {
  check_feature_maps(op, features, spatial_scales);
  check_pooled_size(op, pooled_height, pooled_width);
  const at::Tensor& first = features[0];
  TORCH_CHECK(first.is_cuda(), op, ": input must be a CUDA tensor");
  check_rois(op, rois_in, first);
  const c10::cuda::CUDAGuard guard(first.device());
  const bool channels_last = use_channels_last_cuda(first);
  const int64_t batch_size = first.size(0), channels = first.size(1);
  std::vector<int64_t> heights, widths;
  std::vector<StridesNCHW> strides;
  for (const at::Tensor& f : features) {
    heights.push_back(f.size(2));
    widths.push_back(f.size(3));
    strides.push_back(strides_of(f));
  }
  const int64_t num_rois = rois_in.size(0);
  check_levels_cuda(op, levels, num_rois, first);
  check_batch_indices_cuda(op, rois_in, batch_size);
  at::Tensor out = at::empty({num_rois, channels, pooled_height, pooled_width},
                             first.options().memory_format(channels_last ? at::MemoryFormat::ChannelsLast
                                                                         : at::MemoryFormat::Contiguous));
  if (out.numel() == 0) {
    return out;
  }
  const at::Tensor rois = rois_in.contiguous();
  const PoolShape shape{batch_size, channels, pooled_height, pooled_width, sampling_ratio, aligned};
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, first.scalar_type(), "roi_align_forward_cuda", [&] {
    std::vector<const scalar_t*> data;
    for (const at::Tensor& f : features) {
      data.push_back(f.const_data_ptr<scalar_t>());
    }
    const auto maps = level_maps(op, data, strides, heights, widths, spatial_scales);
    const int64_t* level_ptr = levels.defined() ? levels.const_data_ptr<int64_t>() : nullptr;
    auto launch = [&](auto channels_last_tag) {
      constexpr bool kCL = decltype(channels_last_tag)::value;
      roi_align_forward_kernel_cuda<scalar_t, kCL><<<grid_for(out.numel()), kThreads, 0, stream>>>(
          maps, rois.const_data_ptr<scalar_t>(), level_ptr, num_rois, shape, out.mutable_data_ptr<scalar_t>());
    };
    channels_last ? launch(std::true_type{}) : launch(std::false_type{});
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::vector<at::Tensor> roi_align_backward_levels_cuda(
    const char* op, const at::Tensor& grad, const at::Tensor& rois_in, const std::vector<double>& spatial_scales,
    const at::Tensor& levels, int64_t batch_size, int64_t channels, const std::vector<int64_t>& heights,
    const std::vector<int64_t>& widths, int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
    bool aligned, bool channels_last) {
  check_pooled_size(op, pooled_height, pooled_width);
  TORCH_CHECK(grad.is_cuda(), op, ": grad must be a CUDA tensor");
  check_rois(op, rois_in, grad);
  const int64_t num_rois = rois_in.size(0);
  check_pooled_grad(op, grad, rois_in, num_rois, channels, pooled_height, pooled_width);
  TORCH_CHECK_VALUE(heights.size() == spatial_scales.size() && widths.size() == spatial_scales.size(), op,
                    ": need one height, width and scale per feature map");
  TORCH_CHECK_VALUE(batch_size >= 0 && channels >= 0, op, ": negative batch_size or channels");
  check_levels_cuda(op, levels, num_rois, grad);
  const c10::cuda::CUDAGuard guard(grad.device());
  const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::ScalarType dtype = grad.scalar_type();
  const at::ScalarType acc_dtype = at::toOpMathType(dtype);
  std::vector<at::Tensor> grads;
  std::vector<StridesNCHW> strides;
  for (size_t l = 0; l < heights.size(); ++l) {
    TORCH_CHECK_VALUE(heights[l] >= 0 && widths[l] >= 0, op, ": negative map size");
    // at::empty + zero_, not at::zeros: at::zeros ignores the memory format.
    grads.push_back(
        at::empty({batch_size, channels, heights[l], widths[l]}, grad.options().dtype(acc_dtype).memory_format(format))
            .zero_());
    strides.push_back(strides_of(grads.back()));
  }
  if (num_rois > 0 && channels > 0 && batch_size > 0) {
    const at::Tensor rois = rois_in.contiguous();
    const bool grad_channels_last = use_channels_last_cuda(grad);
    const PoolShape shape{batch_size, channels, pooled_height, pooled_width, sampling_ratio, aligned};
    const bool deterministic = at::globalContext().deterministicAlgorithms();
    cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "roi_align_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      std::vector<acc_t*> data;
      for (at::Tensor& g : grads) {
        data.push_back(g.mutable_data_ptr<acc_t>());
      }
      const auto maps = level_maps(op, data, strides, heights, widths, spatial_scales);
      const int64_t* level_ptr = levels.defined() ? levels.const_data_ptr<int64_t>() : nullptr;
      if (deterministic) {
        TORCH_CHECK(batch_size <= 65535, op, ": the deterministic backward supports at most 65535 images");
        // The gather threads walk the gradient's elements in its own memory order.
        auto launch = [&](auto channels_last_tag) {
          constexpr bool kCL = decltype(channels_last_tag)::value;
          for (int64_t l = 0; l < maps.count; ++l) {
            const int64_t tiles = ((heights[l] + kTile - 1) / kTile) * ((widths[l] + kTile - 1) / kTile);
            if (tiles == 0) {
              continue;
            }
            TORCH_CHECK(tiles <= std::numeric_limits<int32_t>::max(), op, ": feature map too large");
            const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(batch_size));
            roi_align_backward_gather_kernel_cuda<scalar_t, kCL><<<grid, kGatherThreads, 0, stream>>>(
                grad.const_data_ptr<scalar_t>(), strides_of(grad), rois.const_data_ptr<scalar_t>(), level_ptr,
                num_rois, shape, maps, l);
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          }
        };
        channels_last ? launch(std::true_type{}) : launch(std::false_type{});
      } else {
        // The scatter threads walk grad in its memory order (coalesced reads).
        auto launch = [&](auto channels_last_tag) {
          constexpr bool kCL = decltype(channels_last_tag)::value;
          roi_align_backward_atomic_kernel_cuda<scalar_t, kCL><<<grid_for(grad.numel()), kThreads, 0, stream>>>(
              grad.const_data_ptr<scalar_t>(), strides_of(grad), rois.const_data_ptr<scalar_t>(), level_ptr,
              num_rois, shape, maps);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        };
        grad_channels_last ? launch(std::true_type{}) : launch(std::false_type{});
      }
    });
  }
  if (acc_dtype != dtype) {
    for (at::Tensor& g : grads) {
      g = g.to(dtype);  // keeps the memory format
    }
  }
  return grads;
}

at::Tensor roi_align_backward_rois_levels_cuda(const char* op, const at::Tensor& grad,
                                               const std::vector<at::Tensor>& features, const at::Tensor& rois_in,
                                               const std::vector<double>& spatial_scales, const at::Tensor& levels,
                                               int64_t pooled_height, int64_t pooled_width,
                                               int64_t sampling_ratio, bool aligned) {
  check_pooled_size(op, pooled_height, pooled_width);
  check_feature_maps(op, features, spatial_scales);
  const at::Tensor& first = features[0];
  TORCH_CHECK(first.is_cuda() && grad.is_cuda(), op, ": grad and input must be CUDA tensors");
  check_rois(op, rois_in, first);
  const int64_t num_rois = rois_in.size(0), batch_size = first.size(0), channels = first.size(1);
  check_pooled_grad(op, grad, first, num_rois, channels, pooled_height, pooled_width);
  check_levels_cuda(op, levels, num_rois, first);
  const c10::cuda::CUDAGuard guard(first.device());
  std::vector<int64_t> heights, widths;
  std::vector<StridesNCHW> strides;
  for (const at::Tensor& f : features) {
    heights.push_back(f.size(2));
    widths.push_back(f.size(3));
    strides.push_back(strides_of(f));
  }
  const at::ScalarType dtype = first.scalar_type();
  const at::ScalarType acc_dtype = at::toOpMathType(dtype);
  at::Tensor out = at::zeros({num_rois, 5}, rois_in.options().dtype(acc_dtype));
  if (num_rois > 0) {
    const at::Tensor rois = rois_in.contiguous();
    const PoolShape shape{batch_size, channels, pooled_height, pooled_width, sampling_ratio, aligned};
    cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "roi_align_backward_rois_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      std::vector<const scalar_t*> data;
      for (const at::Tensor& f : features) {
        data.push_back(f.const_data_ptr<scalar_t>());
      }
      const auto maps = level_maps(op, data, strides, heights, widths, spatial_scales);
      const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(num_rois, int64_t{65535} * 32));
      roi_align_backward_rois_kernel_cuda<scalar_t><<<blocks, kRoisThreads, 0, stream>>>(
          grad.const_data_ptr<scalar_t>(), strides_of(grad), maps, rois.const_data_ptr<scalar_t>(),
          levels.defined() ? levels.const_data_ptr<int64_t>() : nullptr, num_rois, shape,
          out.mutable_data_ptr<acc_t>());
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return acc_dtype != dtype ? out.to(dtype) : out;
}

std::tuple<at::Tensor, std::vector<at::Tensor>, at::Tensor> roi_align_backward_rois_backward_levels_cuda(
    const char* op, const at::Tensor& grad, const std::vector<at::Tensor>& features, const at::Tensor& rois_in,
    const at::Tensor& grad_grad_rois, const std::vector<double>& spatial_scales, const at::Tensor& levels,
    int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned, bool features_grad) {
  check_pooled_size(op, pooled_height, pooled_width);
  check_feature_maps(op, features, spatial_scales);
  const at::Tensor& first = features[0];
  TORCH_CHECK(first.is_cuda() && grad.is_cuda(), op, ": grad and features must be CUDA tensors");
  check_rois(op, rois_in, first);
  const int64_t num_rois = rois_in.size(0), batch_size = first.size(0), channels = first.size(1);
  check_pooled_grad(op, grad, first, num_rois, channels, pooled_height, pooled_width);
  TORCH_CHECK_VALUE(grad_grad_rois.sizes() == rois_in.sizes(), op, ": grad_grad_rois must be [K, 5] like rois, got ",
                    grad_grad_rois.sizes());
  TORCH_CHECK_VALUE(grad_grad_rois.scalar_type() == rois_in.scalar_type() && grad_grad_rois.device() == rois_in.device(),
                    op, ": grad_grad_rois must have the dtype and device of rois");
  check_levels_cuda(op, levels, num_rois, first);
  const c10::cuda::CUDAGuard guard(first.device());
  std::vector<int64_t> heights, widths;
  std::vector<StridesNCHW> strides, d_strides;
  const at::ScalarType dtype = first.scalar_type();
  const at::ScalarType acc_dtype = at::toOpMathType(dtype);
  std::vector<at::Tensor> d_features;
  for (const at::Tensor& f : features) {
    heights.push_back(f.size(2));
    widths.push_back(f.size(3));
    strides.push_back(strides_of(f));
    if (features_grad) {
      const auto format = use_channels_last_cuda(f) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
      d_features.push_back(at::empty(f.sizes(), f.options().dtype(acc_dtype).memory_format(format)).zero_());
      d_strides.push_back(strides_of(d_features.back()));
    }
  }
  at::Tensor d_grad = at::empty_like(grad);
  at::Tensor d_rois = at::zeros({num_rois, 5}, rois_in.options().dtype(acc_dtype));
  if (num_rois > 0) {
    if (features_grad) {
      at::globalContext().alertNotDeterministic("roi_align_backward_rois_backward_cuda (to the features)");
    }
    const at::Tensor rois = rois_in.contiguous();
    const at::Tensor directions = grad_grad_rois.contiguous();
    const PoolShape shape{batch_size, channels, pooled_height, pooled_width, sampling_ratio, aligned};
    const int64_t* level_ptr = levels.defined() ? levels.const_data_ptr<int64_t>() : nullptr;
    cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "roi_align_backward_rois_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      std::vector<const scalar_t*> data;
      for (const at::Tensor& f : features) {
        data.push_back(f.const_data_ptr<scalar_t>());
      }
      const auto maps = level_maps(op, data, strides, heights, widths, spatial_scales);
      const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(num_rois, int64_t{65535} * 32));
      roi_align_box_second_order_kernel_cuda<scalar_t><<<blocks, kRoisThreads, 0, stream>>>(
          grad.const_data_ptr<scalar_t>(), strides_of(grad), maps, rois.const_data_ptr<scalar_t>(),
          directions.const_data_ptr<scalar_t>(), level_ptr, num_rois, shape, d_grad.mutable_data_ptr<scalar_t>(),
          strides_of(d_grad), d_rois.mutable_data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      if (features_grad && grad.numel() > 0) {
        std::vector<acc_t*> d_data;
        for (at::Tensor& d : d_features) {
          d_data.push_back(d.mutable_data_ptr<acc_t>());
        }
        const auto d_maps = level_maps(op, d_data, d_strides, heights, widths, spatial_scales);
        roi_align_box_second_order_to_input_kernel_cuda<scalar_t><<<grid_for(grad.numel()), kThreads, 0, stream>>>(
            grad.const_data_ptr<scalar_t>(), strides_of(grad), rois.const_data_ptr<scalar_t>(),
            directions.const_data_ptr<scalar_t>(), level_ptr, num_rois, shape, d_maps);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    });
  }
  if (acc_dtype != dtype) {
    d_rois = d_rois.to(dtype);
    for (at::Tensor& d : d_features) {
      d = d.to(dtype);  // keeps the memory format
    }
  }
  return {d_grad, d_features, d_rois};
}

namespace {

at::Tensor roi_align_forward_cuda(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                  int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                  bool aligned) {
  return roi_align_forward_levels_cuda("roi_align", {input}, rois, {spatial_scale}, at::Tensor(), pooled_height,
                                       pooled_width, sampling_ratio, aligned);
}

at::Tensor roi_align_backward_cuda(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                   int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                   int64_t channels, int64_t height, int64_t width, int64_t sampling_ratio,
                                   bool aligned, bool channels_last) {
  return roi_align_backward_levels_cuda("roi_align_backward", grad, rois, {spatial_scale}, at::Tensor(),
                                        batch_size, channels, {height}, {width}, pooled_height, pooled_width,
                                        sampling_ratio, aligned, channels_last)[0];
}

at::Tensor roi_align_backward_rois_cuda(const at::Tensor& grad, const at::Tensor& input, const at::Tensor& rois,
                                        double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                                        int64_t sampling_ratio, bool aligned) {
  return roi_align_backward_rois_levels_cuda("roi_align_backward_rois", grad, {input}, rois, {spatial_scale},
                                             at::Tensor(), pooled_height, pooled_width, sampling_ratio, aligned);
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CUDA, m) {
  m.impl("roi_align", &roi_align_forward_cuda);
  m.impl("roi_align_backward", &roi_align_backward_cuda);
  m.impl("roi_align_backward_rois", &roi_align_backward_rois_cuda);
}

}  // namespace roiops
