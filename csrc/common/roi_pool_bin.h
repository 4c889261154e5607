// RoIPool's bin quantization (Girshick, Fast R-CNN), shared by the CPU and CUDA kernels. The box
// is (x1, y1, x2, y2) in input-image pixels, multiplied by spatial_scale onto the map.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

#include "common/box_geometry.h"

namespace roiops {

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

}  // namespace roiops
