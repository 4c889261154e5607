// Box arithmetic shared by the CPU and CUDA kernels. Boxes are (x1, y1, x2, y2) with x2 >= x1 and
// y2 >= y1 for a proper box; a box with x2 < x1 or y2 < y1 is treated as empty (area 0).
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

namespace roiops {

template <typename T>
C10_HOST_DEVICE inline T box_area(T x1, T y1, T x2, T y2) {
  const T w = x2 - x1;
  const T h = y2 - y1;
  // Written as comparisons, not max(), so that a NaN width gives area 0 rather than NaN leaking
  // into every IoU it touches.
  return (w > T(0) && h > T(0)) ? w * h : T(0);
}

// Intersection over union of two boxes whose areas are already known (from box_area). An empty
// box (area 0, which includes a box with a NaN coordinate) has IoU 0 with everything, so no 0/0 and
// no NaN comes out.
template <typename T>
C10_HOST_DEVICE inline T box_iou_with_areas(T ax1, T ay1, T ax2, T ay2, T area_a,
                                            T bx1, T by1, T bx2, T by2, T area_b) {
  const T ix1 = ax1 > bx1 ? ax1 : bx1;
  const T iy1 = ay1 > by1 ? ay1 : by1;
  const T ix2 = ax2 < bx2 ? ax2 : bx2;
  const T iy2 = ay2 < by2 ? ay2 : by2;
  const T iw = ix2 - ix1;
  const T ih = iy2 - iy1;
  const T inter = (iw > T(0) && ih > T(0)) ? iw * ih : T(0);
  const T uni = area_a + area_b - inter;
  return (area_a > T(0) && area_b > T(0)) ? inter / uni : T(0);
}

// True when all four box coordinates are finite. A RoI that is not pools to 0 (RoIAlign and
// RoIPool) and receives no gradient.
template <typename T>
C10_HOST_DEVICE inline bool roi_is_finite(T x1, T y1, T x2, T y2) {
  // x - x is 0 for finite x and NaN for +-Inf and NaN; the comparison is false for NaN.
  return (x1 - x1) == T(0) && (y1 - y1) == T(0) && (x2 - x2) == T(0) && (y2 - y2) == T(0);
}

// True when b, a RoI's batch index as stored in rois[k, 0] (a floating value), names an image:
// an integer in [0, batch_size). A RoI that fails this is rejected on the host; the kernels also
// test it so that a direct call cannot read out of bounds.
template <typename T>
C10_HOST_DEVICE inline bool is_batch_index(T b, int64_t batch_size) {
  return b >= T(0) && b < static_cast<T>(batch_size) && b == static_cast<T>(static_cast<int64_t>(b));
}

}  // namespace roiops
