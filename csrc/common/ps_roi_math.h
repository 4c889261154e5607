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

// PSRoIPool's bin (ph, pw): the box corners rounded to map pixels (roi_pool_round), the RoI at
// least 1x1 (end - start, unlike RoIPool's end - start + 1), the bin floor(p * bin) .. ceil((p + 1)
// * bin) of it, clipped to [0, height - 1] x [0, width - 1]. That upper clip is torchvision's
// forward definition: the last row and column of the map are never pooled, and a bin lying wholly
// in them is empty. An empty bin (also: a box with a NaN or infinite coordinate) averages to 0.
template <typename T>
C10_HOST_DEVICE inline PoolBin ps_roi_pool_bin(T x1, T y1, T x2, T y2, T spatial_scale, int64_t ph, int64_t pw,
                                               int64_t pooled_height, int64_t pooled_width, int64_t height,
                                               int64_t width) {
  PoolBin bin;
  bin.h_start = bin.h_end = bin.w_start = bin.w_end = 0;
  if (!roi_is_finite(x1 * spatial_scale, y1 * spatial_scale, x2 * spatial_scale, y2 * spatial_scale)) {
    return bin;
  }
  const int64_t start_w = roi_pool_round(x1 * spatial_scale, 0);
  const int64_t start_h = roi_pool_round(y1 * spatial_scale, 0);
  const int64_t end_w = roi_pool_round(x2 * spatial_scale, 0);
  const int64_t end_h = roi_pool_round(y2 * spatial_scale, 0);
  const int64_t roi_w = end_w - start_w > 1 ? end_w - start_w : 1;
  const int64_t roi_h = end_h - start_h > 1 ? end_h - start_h : 1;
  const T bin_h = static_cast<T>(roi_h) / static_cast<T>(pooled_height);
  const T bin_w = static_cast<T>(roi_w) / static_cast<T>(pooled_width);
  const int64_t hs = static_cast<int64_t>(::floor(static_cast<T>(ph) * bin_h)) + start_h;
  const int64_t he = static_cast<int64_t>(::ceil(static_cast<T>(ph + 1) * bin_h)) + start_h;
  const int64_t ws = static_cast<int64_t>(::floor(static_cast<T>(pw) * bin_w)) + start_w;
  const int64_t we = static_cast<int64_t>(::ceil(static_cast<T>(pw + 1) * bin_w)) + start_w;
  const int64_t hmax = height - 1, wmax = width - 1;
  bin.h_start = hs < 0 ? 0 : hs > hmax ? hmax : hs;
  bin.h_end = he < 0 ? 0 : he > hmax ? hmax : he;
  bin.w_start = ws < 0 ? 0 : ws > wmax ? wmax : ws;
  bin.w_end = we < 0 ? 0 : we > wmax ? wmax : we;
  return bin;
}

}  // namespace roiops
