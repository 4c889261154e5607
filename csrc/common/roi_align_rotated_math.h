// Where RoIAlignRotated samples, shared by the CPU and CUDA kernels. The per-axis bin geometry
// (bin size, samples per bin, aligned=False's 1-pixel minimum) is RoIAlign's
// roi_align_axis_from_size, applied to the box's own width and height on the map; the bilinear
// weights of a sample are RoIAlign's bilinear_axis (common/roi_align_math.h). Only the placement
// differs: samples are laid out on the box's rotated grid around its centre.
//
// A RoI is (x_ctr, y_ctr, width, height, angle) in input-image pixels, angle in degrees,
// counter-clockwise on screen (common/rotated_box_geometry.h). On the map the centre is
// (x_ctr, y_ctr) * spatial_scale - offset (offset 0.5 when aligned, as RoIAlign's pixel model);
// the sample at local offset (xx, yy) from the centre, xx along the width, sits at
//     x = cx + xx * cos + yy * sin,   y = cy - xx * sin + yy * cos.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

#include "common/roi_align_math.h"
#include "common/rotated_box_geometry.h"

namespace roiops {

template <typename T>
struct RotatedRoi {
  T cx, cy;         // centre on the map, in map pixels
  T c, s;           // cos and sin of the angle
  RoiAxis<T> ay;    // along the box's height: bin size and samples per bin (start unused)
  RoiAxis<T> ax;    // along the box's width
  T start_y, start_x;  // local offset of the first bin edge from the centre: -size / 2
  bool valid;       // false: pools to 0 (non-finite value, or negative width or height)
};

template <typename T>
C10_HOST_DEVICE inline RotatedRoi<T> make_rotated_roi(T cx, T cy, T w, T h, T angle, T spatial_scale,
                                                      int64_t pooled_height, int64_t pooled_width,
                                                      int64_t sampling_ratio, bool aligned) {
  RotatedRoi<T> r;
  r.valid = all_finite5(cx, cy, w, h, angle) && w >= T(0) && h >= T(0);
  if (!r.valid) {
    cx = cy = w = h = angle = T(0);
  }
  const T offset = aligned ? T(0.5) : T(0);
  r.cx = cx * spatial_scale - offset;
  r.cy = cy * spatial_scale - offset;
  sincos_degrees(angle, &r.s, &r.c);
  // The size straight from the box (start unused): a box a tiny fraction of a pixel high keeps
  // its adaptive sample, where (h * s - 0.5) - (-0.5) would round it to nothing.
  r.ay = roi_align_axis_from_size(T(0), h * spatial_scale, spatial_scale, pooled_height, sampling_ratio, aligned);
  r.ax = roi_align_axis_from_size(T(0), w * spatial_scale, spatial_scale, pooled_width, sampling_ratio, aligned);
  r.start_y = -T(0.5) * r.ay.bin_size * static_cast<T>(pooled_height);
  r.start_x = -T(0.5) * r.ax.bin_size * static_cast<T>(pooled_width);
  if (!r.valid) {
    r.ay.grid = 0;
    r.ax.grid = 0;
  }
  return r;
}

// Map position (*y, *x) of sample (iy, ix) of bin (ph, pw).
template <typename T>
C10_HOST_DEVICE inline void rotated_sample_point(const RotatedRoi<T>& r, int64_t ph, int64_t pw, int64_t iy,
                                                 int64_t ix, T* y, T* x) {
  const T yy = r.start_y + static_cast<T>(ph) * r.ay.bin_size +
               (static_cast<T>(iy) + T(0.5)) * r.ay.bin_size / static_cast<T>(r.ay.grid);
  const T xx = r.start_x + static_cast<T>(pw) * r.ax.bin_size +
               (static_cast<T>(ix) + T(0.5)) * r.ax.bin_size / static_cast<T>(r.ax.grid);
  *x = r.cx + xx * r.c + yy * r.s;
  *y = r.cy - xx * r.s + yy * r.c;
}

// The four bilinear taps of the sample at (y, x) on a height x width map: flat pixel indices
// (row * width + column) and weights; all weights 0 when the sample is off the map.
template <typename T>
struct RotatedTaps {
  int64_t index[4];
  T weight[4];
};

template <typename T>
C10_HOST_DEVICE inline RotatedTaps<T> rotated_sample_taps(T y, T x, int64_t height, int64_t width) {
  const AxisSample<T> sy = bilinear_axis(y, height);
  const AxisSample<T> sx = bilinear_axis(x, width);
  RotatedTaps<T> t;
  t.index[0] = sy.low * width + sx.low;
  t.index[1] = sy.low * width + sx.high;
  t.index[2] = sy.high * width + sx.low;
  t.index[3] = sy.high * width + sx.high;
  t.weight[0] = sy.w_low * sx.w_low;
  t.weight[1] = sy.w_low * sx.w_high;
  t.weight[2] = sy.w_high * sx.w_low;
  t.weight[3] = sy.w_high * sx.w_high;
  return t;
}

}  // namespace roiops
