// RoIAlign arithmetic shared by the CPU and CUDA kernels: where RoIAlign samples, with which
// bilinear weights, and the derivatives of a sample with respect to the map and the box. (RoIPool's
// bins are in roi_pool_bin.h, the FPN level of a RoI in fpn_level.h.)
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

#include "common/box_geometry.h"

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

// RoIAlign geometry along one axis from the RoI's first edge and size on the map (map pixels).
// aligned=False raises the size to at least 1 map pixel (the original definition), aligned=True
// keeps it as is, so a negative size has no adaptive samples and pools to 0.
template <typename T>
C10_HOST_DEVICE inline RoiAxis<T> roi_align_axis_from_size(T start, T size, T spatial_scale, int64_t pooled,
                                                           int64_t sampling_ratio, bool aligned) {
  RoiAxis<T> axis;
  axis.start = start;
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

// RoIAlign geometry along one axis from the box coordinates lo (x1 or y1) and hi (x2 or y2). The
// size is the difference of the shifted edges, (hi * s - offset) - (lo * s - offset), rounded as
// torchvision rounds it. Callers handle non-finite coordinates before calling (see roi_is_finite).
template <typename T>
C10_HOST_DEVICE inline RoiAxis<T> roi_align_axis(T lo, T hi, T spatial_scale, int64_t pooled,
                                                 int64_t sampling_ratio, bool aligned) {
  const T offset = aligned ? T(0.5) : T(0);
  const T start = lo * spatial_scale - offset;
  const T end = hi * spatial_scale - offset;
  return roi_align_axis_from_size(start, end - start, spatial_scale, pooled, sampling_ratio, aligned);
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

// ---- derivatives with respect to the box -------------------------------------------------------
//
// SY and SX are per-axis types with d_lo and d_hi, the derivatives of the sample position with
// respect to the box's low and high coordinate along that axis (the CPU's Tap, CUDA's
// SampleSlopes).

// Four values named like a box's coordinates: a derivative with respect to (x1, y1, x2, y2), or a
// direction in which the box moves.
template <typename T>
struct BoxCoords {
  T x1 = T(0), y1 = T(0), x2 = T(0), y2 = T(0);
};

// How far the box moving along u moves a sample along one axis.
template <typename T, typename S>
C10_HOST_DEVICE inline T sample_move(const S& s, T u_lo, T u_hi) {
  return s.d_lo * u_lo + s.d_hi * u_hi;
}

// Adds one sample's share of d<grad, roi_align>/d(box) to *d; gb is the bin's gradient divided by
// its sample count.
template <typename T, typename Y, typename X, typename SY, typename SX>
C10_HOST_DEVICE inline void add_sample_box_gradient(const Y& ty, const X& tx, const SY& sy, const SX& sx, T gb,
                                                    T v_ll, T v_lh, T v_hl, T v_hh, BoxCoords<T>* d) {
  T d_y, d_x;
  bilinear_gradient(ty, tx, v_ll, v_lh, v_hl, v_hh, &d_y, &d_x);
  d->y1 += gb * d_y * sy.d_lo;
  d->y2 += gb * d_y * sy.d_hi;
  d->x1 += gb * d_x * sx.d_lo;
  d->x2 += gb * d_x * sx.d_hi;
}

// One sample's share of the second derivatives of S = <u, box gradient> (the box-gradient files
// explain S): adds its d S/d(box) to *d and returns its term of d S/d grad (to be summed over the
// bin's samples and multiplied by the bin's inv_count). gb as above.
template <typename T, typename Y, typename X, typename SY, typename SX>
C10_HOST_DEVICE inline T add_sample_box_second_order(const Y& ty, const X& tx, const SY& sy, const SX& sx,
                                                     const BoxCoords<T>& u, T gb, T v_ll, T v_lh, T v_hl, T v_hh,
                                                     BoxCoords<T>* d) {
  const T move_y = sample_move(sy, u.y1, u.y2);
  const T move_x = sample_move(sx, u.x1, u.x2);
  T d_y, d_x;
  bilinear_gradient(ty, tx, v_ll, v_lh, v_hl, v_hh, &d_y, &d_x);
  // d S/d(position y) = gb * d2/dydx * move_x, and symmetrically for x.
  const T cross = gb * bilinear_cross_derivative(ty, tx, v_ll, v_lh, v_hl, v_hh);
  d->y1 += cross * move_x * sy.d_lo;
  d->y2 += cross * move_x * sy.d_hi;
  d->x1 += cross * move_y * sx.d_lo;
  d->x2 += cross * move_y * sx.d_hi;
  return d_y * move_y + d_x * move_x;
}

}  // namespace roiops
