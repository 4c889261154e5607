// Position-sensitive RoI pooling (Dai et al., R-FCN, 2016) arithmetic shared by the CPU and CUDA
// kernels: which input channel a pooled element reads, and PSRoIPool's bins. PSRoIAlign's sample
// positions and bilinear weights are RoIAlign's own (roi_align_math.h, always with aligned=True's
// half-pixel shift), so they are not repeated here.
//
// The input has C = C_out * PH * PW channels: a score map per output channel and bin. Output
// element (k, c_out, ph, pw) pools only channel (c_out * PH + ph) * PW + pw over bin (ph, pw) of
// RoI k. torchvision's ops also return this index as a `channel_mapping` tensor; it is a function
// of the position alone, so roiops computes it where needed and never stores it.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

#include "common/box_geometry.h"
#include "common/roi_align_math.h"
#include "common/roi_pool_bin.h"

namespace roiops {

// The input channel read by output channel c_out at bin (ph, pw) of a PH x PW grid.
C10_HOST_DEVICE inline int64_t ps_input_channel(int64_t c_out, int64_t ph, int64_t pw, int64_t pooled_height,
                                                int64_t pooled_width) {
  return (c_out * pooled_height + ph) * pooled_width + pw;
}

// How many input channels apart two consecutive output channels of one bin read: the CPU kernels
// pool a group of output channels of a bin together, at this stride from ps_input_channel(c0, ...).
C10_HOST_DEVICE inline int64_t ps_channel_stride(int64_t pooled_height, int64_t pooled_width) {
  return ps_input_channel(1, 0, 0, pooled_height, pooled_width) -
         ps_input_channel(0, 0, 0, pooled_height, pooled_width);
}

// PSRoIAlign geometry along one axis: RoIAlign's with the half-pixel shift (aligned=True: the box
// keeps its size however small, and a box with hi <= lo has no adaptive samples).
template <typename T>
C10_HOST_DEVICE inline RoiAxis<T> ps_roi_align_axis(T lo, T hi, T spatial_scale, int64_t pooled,
                                                    int64_t sampling_ratio) {
  return roi_align_axis(lo, hi, spatial_scale, pooled, sampling_ratio, /*aligned=*/true);
}

// PSRoIPool along one axis of a RoI: the box's ends rounded to map pixels (roi_pool_round), the RoI
// at least 1 pixel long (end - start, unlike RoIPool's end - start + 1), cut into `pooled` bins.
template <typename T>
struct PsPoolAxis {
  int64_t start;
  T bin;
};

template <typename T>
C10_HOST_DEVICE inline PsPoolAxis<T> ps_roi_pool_axis(T lo, T hi, T spatial_scale, int64_t pooled) {
  PsPoolAxis<T> axis;
  axis.start = roi_pool_round(lo * spatial_scale, 0);
  const int64_t end = roi_pool_round(hi * spatial_scale, 0);
  const int64_t length = end - axis.start > 1 ? end - axis.start : 1;
  axis.bin = static_cast<T>(length) / static_cast<T>(pooled);
  return axis;
}

// Bin p of the axis: the pixels [*begin, *end) from floor(p * bin) to ceil((p + 1) * bin) past the
// start, both clipped to [0, size - 1]. That upper clip is torchvision's forward definition: the
// last pixel of the axis is never pooled, and a bin lying wholly on it is empty.
template <typename T>
C10_HOST_DEVICE inline void ps_roi_pool_range(const PsPoolAxis<T>& axis, int64_t p, int64_t size, int64_t* begin,
                                              int64_t* end) {
  const int64_t b = static_cast<int64_t>(::floor(static_cast<T>(p) * axis.bin)) + axis.start;
  const int64_t e = static_cast<int64_t>(::ceil(static_cast<T>(p + 1) * axis.bin)) + axis.start;
  const int64_t last = size - 1;
  *begin = b < 0 ? 0 : b > last ? last : b;
  *end = e < 0 ? 0 : e > last ? last : e;
}

// PSRoIPool's bin (ph, pw): ps_roi_pool_range of both axes. An empty bin (also: a box with a NaN or
// infinite coordinate) averages to 0.
template <typename T>
C10_HOST_DEVICE inline PoolBin ps_roi_pool_bin(T x1, T y1, T x2, T y2, T spatial_scale, int64_t ph, int64_t pw,
                                               int64_t pooled_height, int64_t pooled_width, int64_t height,
                                               int64_t width) {
  PoolBin bin;
  bin.h_start = bin.h_end = bin.w_start = bin.w_end = 0;
  if (!roi_is_finite(x1 * spatial_scale, y1 * spatial_scale, x2 * spatial_scale, y2 * spatial_scale)) {
    return bin;
  }
  ps_roi_pool_range(ps_roi_pool_axis(y1, y2, spatial_scale, pooled_height), ph, height, &bin.h_start, &bin.h_end);
  ps_roi_pool_range(ps_roi_pool_axis(x1, x2, spatial_scale, pooled_width), pw, width, &bin.w_start, &bin.w_end);
  return bin;
}

}  // namespace roiops
