// RoI pooling arithmetic shared by the CPU and CUDA kernels: where RoIAlign samples, with which
// bilinear weights, how RoIPool quantizes its bins, and which FPN level a RoI is pooled from.
// Every function is C10_HOST_DEVICE and works per RoI or per sample, never per channel, so the
// kernels compute it once and reuse it across channels. Changing a formula here changes both
// devices at once; the CPU tests pin it.
//
// Coordinates: a RoI is (x1, y1, x2, y2) in input-image pixels; multiplied by spatial_scale it lands
// on the feature map, whose pixel (h, w) holds the value at the point (w, h) (aligned=False, the
// original paper's convention) or at (w + 0.5, h + 0.5) (aligned=True: the RoI is shifted by -0.5
// so that its corners and the pixel centres agree, as Detectron2 does).
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

namespace roiops {

// Upper bound on the adaptive (sampling_ratio <= 0) samples per bin along one axis. ceil(roi / out)
// is used as is below it; a RoI so large that it exceeds this (over a million feature-map pixels
// per bin) is sampled with this many points. Only samples that land on the map are visited (see
// sample_index_range), so even capped grids cost O(map size), never O(RoI size).
constexpr int64_t kMaxSamplesPerBinAxis = int64_t(1) << 20;

// The geometry of one RoI on one feature map, along one axis (the same struct serves x and y).
template <typename T>
struct RoiAxis {
  T start;       // first edge of the RoI on the map, in map pixels
  T bin_size;    // size of one output bin, in map pixels
  int64_t grid;  // samples per bin along this axis (>= 0)
  // d(start)/d(box low coordinate) is spatial_scale; d(bin_size)/d(box high coordinate) is
  // size_slope and d(bin_size)/d(box low coordinate) is -size_slope. size_slope is
  // spatial_scale / pooled while the RoI size follows the box, 0 where aligned=False clamps the
  // RoI size to 1 pixel.
  T size_slope;
};

// RoIAlign geometry along one axis from the box coordinates lo (x1 or y1) and hi (x2 or y2).
// The RoI size is (hi - lo) * spatial_scale; aligned=False raises it to at least 1 map pixel (the
// original definition), aligned=True keeps it as is, so a box with hi < lo has no adaptive samples
// and pools to 0. Callers handle non-finite coordinates before calling (see roi_is_finite).
template <typename T>
C10_HOST_DEVICE inline RoiAxis<T> roi_align_axis(T lo, T hi, T spatial_scale, int64_t pooled,
                                                 int64_t sampling_ratio, bool aligned) {
  const T offset = aligned ? T(0.5) : T(0);
  RoiAxis<T> axis;
  axis.start = lo * spatial_scale - offset;
  const T end = hi * spatial_scale - offset;
  T size = end - axis.start;
  axis.size_slope = spatial_scale / static_cast<T>(pooled);
  if (!aligned && !(size >= T(1))) {
    size = T(1);
    axis.size_slope = T(0);
  }
  axis.bin_size = size / static_cast<T>(pooled);
  if (sampling_ratio > 0) {
    axis.grid = sampling_ratio < kMaxSamplesPerBinAxis ? sampling_ratio : kMaxSamplesPerBinAxis;
  } else {
    // ceil(roi / pooled) in T, as the reference definition computes it; negative sizes give 0.
    const T adaptive = static_cast<T>(::ceil(size / static_cast<T>(pooled)));
    axis.grid = adaptive <= T(0) ? 0
              : adaptive >= static_cast<T>(kMaxSamplesPerBinAxis) ? kMaxSamplesPerBinAxis
                                                                  : static_cast<int64_t>(adaptive);
  }
  return axis;
}

// True when all four box coordinates are finite. A RoI that is not pools to 0 (RoIAlign and
// RoIPool) and receives no gradient.
template <typename T>
C10_HOST_DEVICE inline bool roi_is_finite(T x1, T y1, T x2, T y2) {
  // x - x is 0 for finite x and NaN for +-Inf and NaN; the comparison is false for NaN.
  return (x1 - x1) == T(0) && (y1 - y1) == T(0) && (x2 - x2) == T(0) && (y2 - y2) == T(0);
}

// 1 / (number of samples in a bin), the averaging factor. A grid with no samples gives 1 (its sum
// is 0 anyway). The product is formed in T: with capped grids it reaches 2^40, beyond int32.
template <typename T>
C10_HOST_DEVICE inline T roi_align_inv_count(const RoiAxis<T>& ay, const RoiAxis<T>& ax) {
  const T count = static_cast<T>(ay.grid) * static_cast<T>(ax.grid);
  return count > T(0) ? T(1) / count : T(1);
}

// Position of sample i (0 <= i < grid) of bin p along an axis: the centre of the i-th of grid
// equal sub-intervals of the bin.
template <typename T>
C10_HOST_DEVICE inline T sample_position(const RoiAxis<T>& axis, int64_t p, int64_t i) {
  return axis.start + static_cast<T>(p) * axis.bin_size +
         (static_cast<T>(i) + T(0.5)) * axis.bin_size / static_cast<T>(axis.grid);
}

// d(sample position)/d(lo) and d(sample position)/d(hi) for sample i of bin p: the position is
// start + frac * bin_size with frac = p + (i + 0.5) / grid.
template <typename T>
C10_HOST_DEVICE inline void sample_position_slopes(const RoiAxis<T>& axis, T spatial_scale, int64_t p,
                                                   int64_t i, T* d_lo, T* d_hi) {
  const T frac = static_cast<T>(p) + (static_cast<T>(i) + T(0.5)) / static_cast<T>(axis.grid);
  *d_hi = frac * axis.size_slope;
  *d_lo = spatial_scale - *d_hi;
}

// The sample indices [*first, *last) of bin p that can land inside [-1, size], the only ones that
// contribute. A superset: callers still test each sample (bilinear_axis does). Without this a huge
// RoI would loop over ~kMaxSamplesPerBinAxis^2 samples that all contribute 0.
template <typename T>
C10_HOST_DEVICE inline void sample_index_range(const RoiAxis<T>& axis, int64_t p, int64_t size,
                                               int64_t* first, int64_t* last) {
  *first = 0;
  *last = axis.grid;
  if (axis.grid <= 2) {
    return;
  }
  // Solved in double: position(i) = bin_start + (i + 0.5) * step, monotone in i.
  const double step = static_cast<double>(axis.bin_size) / static_cast<double>(axis.grid);
  if (!(step > 0.0)) {
    return;  // every sample sits on the bin start: all or none contribute, each is tested
  }
  const double bin_start =
      static_cast<double>(axis.start) + static_cast<double>(p) * static_cast<double>(axis.bin_size);
  const double i_lo = (-1.0 - bin_start) / step - 0.5;
  const double i_hi = (static_cast<double>(size) - bin_start) / step - 0.5;
  const double g = static_cast<double>(axis.grid);
  // One sample of slack on each side absorbs the rounding of the position in T.
  const double f = ::floor(i_lo) - 1.0;
  const double l = ::ceil(i_hi) + 2.0;
  *first = f <= 0.0 ? 0 : f >= g ? axis.grid : static_cast<int64_t>(f);
  *last = l <= 0.0 ? 0 : l >= g ? axis.grid : static_cast<int64_t>(l);
  if (*last < *first) {
    *last = *first;
  }
}

// Linear interpolation weights of one sample along one axis of a map with `size` pixels.
// The 2-D bilinear weight of corner (a, b) is the product of the y weight a and the x weight b.
template <typename T>
struct AxisSample {
  int64_t low;   // first pixel index
  int64_t high;  // second pixel index (== low at the last pixel)
  T w_low;       // weight of low; 0 for a sample outside [-1, size]
  T w_high;      // weight of high
  // d(w_high)/d(position) = -d(w_low)/d(position): 1 inside a pixel cell, 0 where the position
  // was clamped to the border (it then no longer moves the weights) or the sample is outside.
  T slope;
};

// Samples outside [-1, size] contribute 0. Positions in [-1, 0] read pixel 0, positions in
// [size - 1, size] read pixel size - 1 (the map is extended by its border value half a pixel
// beyond, which is what the original kernels do).
template <typename T>
C10_HOST_DEVICE inline AxisSample<T> bilinear_axis(T pos, int64_t size) {
  AxisSample<T> s;
  if (!(pos >= T(-1)) || pos > static_cast<T>(size) || size <= 0) {  // !(>=) also rejects NaN
    s.low = 0;
    s.high = 0;
    s.w_low = T(0);
    s.w_high = T(0);
    s.slope = T(0);
    return s;
  }
  bool clamped = false;
  if (pos <= T(0)) {
    pos = T(0);
    clamped = true;
  }
  int64_t low = static_cast<int64_t>(pos);
  int64_t high;
  if (low >= size - 1) {
    low = size - 1;
    high = low;
    pos = static_cast<T>(low);
    clamped = true;
  } else {
    high = low + 1;
  }
  const T frac = pos - static_cast<T>(low);
  s.low = low;
  s.high = high;
  s.w_low = T(1) - frac;
  s.w_high = frac;
  s.slope = clamped ? T(0) : T(1);
  return s;
}

// ---- derivatives of one bilinear sample -------------------------------------------------------
//
// Y and X are per-axis tap types with w_low, w_high and slope (AxisSample, or the CPU's Tap). The
// corner values are v_ll (low row, low column), v_lh (low row, high column), v_hl, v_hh.

// First derivatives of the sample value along y and x: bilinear, so each is the difference of two
// rows (columns) interpolated along the other axis. slope is 0 where a clamp holds the position.
template <typename T, typename Y, typename X>
C10_HOST_DEVICE inline void bilinear_gradient(const Y& ty, const X& tx, T v_ll, T v_lh, T v_hl, T v_hh,
                                              T* d_y, T* d_x) {
  *d_y = ty.slope * (tx.w_low * (v_hl - v_ll) + tx.w_high * (v_hh - v_lh));
  *d_x = tx.slope * (ty.w_low * (v_lh - v_ll) + ty.w_high * (v_hh - v_hl));
}

// The only non-zero second derivative of the sample value, d2/dydx: along one axis the value is
// linear, so d2/dy2 = d2/dx2 = 0 inside a pixel cell.
template <typename T, typename Y, typename X>
C10_HOST_DEVICE inline T bilinear_cross_derivative(const Y& ty, const X& tx, T v_ll, T v_lh, T v_hl, T v_hh) {
  return ty.slope * tx.slope * ((v_hh - v_hl) - (v_lh - v_ll));
}

// Corner weights of the directional derivative d_y * move_y + d_x * move_x (bilinear_gradient
// along a move of the sample position), which is linear in the four corner values:
// w[0] * v_ll + w[1] * v_lh + w[2] * v_hl + w[3] * v_hh.
template <typename T, typename Y, typename X>
C10_HOST_DEVICE inline void bilinear_direction_weights(const Y& ty, const X& tx, T move_y, T move_x, T w[4]) {
  const T sy = ty.slope * move_y, sx = tx.slope * move_x;
  w[0] = -sy * tx.w_low - sx * ty.w_low;
  w[1] = -sy * tx.w_high + sx * ty.w_low;
  w[2] = sy * tx.w_low - sx * ty.w_high;
  w[3] = sy * tx.w_high + sx * ty.w_high;
}

// ---- RoIPool ---------------------------------------------------------------------------------

// A RoIPool bin: the pixel rectangle [h_start, h_end) x [w_start, w_end), clipped to the map.
struct PoolBin {
  int64_t h_start, h_end, w_start, w_end;
  C10_HOST_DEVICE bool empty() const { return h_end <= h_start || w_end <= w_start; }
};

// Rounds a scaled coordinate to the nearest pixel (half away from zero, as C's round), after
// clamping it into a range where the integer arithmetic below cannot overflow; NaN gives `nan_to`.
template <typename T>
C10_HOST_DEVICE inline int64_t roi_pool_round(T v, int64_t nan_to) {
  const double d = static_cast<double>(v);
  if (!(d == d)) {
    return nan_to;
  }
  const double limit = 1073741824.0;  // 2^30
  const double c = d < -limit ? -limit : d > limit ? limit : d;
  return static_cast<int64_t>(::round(c));
}

// RoIPool's quantization (Girshick, Fast R-CNN): the box corners are rounded to map pixels, the
// RoI is at least 1x1 pixels, bin (ph, pw) covers floor(p * bin) .. ceil((p + 1) * bin) of it, and
// everything is clipped to the map. A box with a NaN coordinate gets empty bins (output 0).
template <typename T>
C10_HOST_DEVICE inline PoolBin roi_pool_bin(T x1, T y1, T x2, T y2, T spatial_scale, int64_t ph,
                                            int64_t pw, int64_t pooled_height, int64_t pooled_width,
                                            int64_t height, int64_t width) {
  PoolBin bin;
  if (!roi_is_finite(x1 * spatial_scale, y1 * spatial_scale, x2 * spatial_scale, y2 * spatial_scale)) {
    // NaN or an overflow to Inf: nothing sensible to round.
    bin.h_start = bin.h_end = bin.w_start = bin.w_end = 0;
    return bin;
  }
  const int64_t start_w = roi_pool_round(x1 * spatial_scale, 0);
  const int64_t start_h = roi_pool_round(y1 * spatial_scale, 0);
  const int64_t end_w = roi_pool_round(x2 * spatial_scale, 0);
  const int64_t end_h = roi_pool_round(y2 * spatial_scale, 0);
  const int64_t roi_w = end_w - start_w + 1 > 1 ? end_w - start_w + 1 : 1;
  const int64_t roi_h = end_h - start_h + 1 > 1 ? end_h - start_h + 1 : 1;
  const T bin_h = static_cast<T>(roi_h) / static_cast<T>(pooled_height);
  const T bin_w = static_cast<T>(roi_w) / static_cast<T>(pooled_width);
  int64_t hs = static_cast<int64_t>(::floor(static_cast<T>(ph) * bin_h)) + start_h;
  int64_t he = static_cast<int64_t>(::ceil(static_cast<T>(ph + 1) * bin_h)) + start_h;
  int64_t ws = static_cast<int64_t>(::floor(static_cast<T>(pw) * bin_w)) + start_w;
  int64_t we = static_cast<int64_t>(::ceil(static_cast<T>(pw + 1) * bin_w)) + start_w;
  bin.h_start = hs < 0 ? 0 : hs > height ? height : hs;
  bin.h_end = he < 0 ? 0 : he > height ? height : he;
  bin.w_start = ws < 0 ? 0 : ws > width ? width : ws;
  bin.w_end = we < 0 ? 0 : we > width ? width : we;
  return bin;
}

// ---- FPN level assignment ----------------------------------------------------------------------

// Index (0 .. k_max - k_min) of the pyramid level a RoI is pooled from, FPN (Lin et al. 2017)
// eq. 1: k = floor(k0 + log2(sqrt(w * h) / canonical_scale) + eps), clamped to [k_min, k_max].
// The box is in image pixels. Evaluated in T with the operation order of torchvision's
// LevelMapper (area = (x2 - x1) * (y2 - y1), sqrt, divide, log2, + k0, + 1e-6, floor), so that the
// same RoI lands on the same level. A box whose area is 0, negative or NaN goes to the finest level.
template <typename T>
C10_HOST_DEVICE inline int64_t fpn_level_index(T x1, T y1, T x2, T y2, T canonical_scale,
                                               int64_t canonical_level, int64_t k_min, int64_t k_max) {
  const T area = (x2 - x1) * (y2 - y1);
  if (!(area > T(0))) {
    return 0;
  }
  // Each libm call is rounded back to T at once so that the additions happen in T, as in torch.
  const T s = static_cast<T>(::sqrt(area));
  const T lg = static_cast<T>(::log2(s / canonical_scale));
  const T k = static_cast<T>(::floor(static_cast<T>(canonical_level) + lg + static_cast<T>(1e-6)));
  if (!(k > static_cast<T>(k_min))) {  // also NaN
    return 0;
  }
  if (k >= static_cast<T>(k_max)) {
    return k_max - k_min;
  }
  return static_cast<int64_t>(k) - k_min;
}

}  // namespace roiops
