// Box arithmetic shared by the CPU and CUDA kernels. Boxes are (x1, y1, x2, y2) with x2 >= x1 and
// y2 >= y1 for a proper box; a box with x2 < x1 or y2 < y1 is treated as empty (area 0).
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>

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

// ---- The pairwise IoU family: generalized, distance and complete IoU ------------------------
// The kind argument of roiops::box_iou_family (and of the kernels' template parameter).
enum BoxIouKind : int {
  kBoxIou = 0,
  kGeneralizedBoxIou = 1,  // Rezatofighi et al. 2019
  kDistanceBoxIou = 2,     // Zheng et al. 2020, DIoU
  kCompleteBoxIou = 3,     // Zheng et al. 2020, CIoU
};

// What every pairwise measure needs of one box, computed once per box rather than once per pair:
// its corners, its area (box_area: 0 when empty), its centre and, for the complete IoU, the angle
// atan(w / h) of its aspect ratio.
template <typename T>
struct BoxTerms {
  T x1, y1, x2, y2, area, cx, cy, angle;
};

// atan(w / h) as torchvision's complete IoU writes it (w, h unclamped, so an inverted box has a
// negative width), except that a box with w = h = 0 gets angle 0 where 0 / 0 would be NaN.
template <typename T>
C10_HOST_DEVICE inline T box_aspect_angle(T w, T h) {
#ifdef __CUDA_ARCH__
  return (w == T(0) && h == T(0)) ? T(0) : static_cast<T>(atan(w / h));
#else
  return (w == T(0) && h == T(0)) ? T(0) : static_cast<T>(std::atan(w / h));
#endif
}

template <typename T>
C10_HOST_DEVICE inline BoxTerms<T> box_terms(T x1, T y1, T x2, T y2, bool with_angle) {
  BoxTerms<T> t;
  t.x1 = x1;
  t.y1 = y1;
  t.x2 = x2;
  t.y2 = y2;
  t.area = box_area(x1, y1, x2, y2);
  // (x1 + x2) / 2 in the box dtype, the operation order of torchvision's centres.
  t.cx = (x1 + x2) / T(2);
  t.cy = (y1 + y2) / T(2);
  t.angle = with_angle ? box_aspect_angle(x2 - x1, y2 - y1) : T(0);
  return t;
}

// The pairwise measure of kind `kind` between boxes a and b, one formula for the CPU and CUDA
// kernels. With iou = intersection / union (0 where either box is empty, as box_iou_with_areas),
// C the smallest box enclosing both (side lengths clamped at 0), d the distance of the centres:
//   generalized: iou - (area(C) - union) / area(C), the penalty 0 where area(C) is 0
//   distance:    iou - d^2 / (diag(C)^2 + eps)
//   complete:    distance - alpha * v, v = 4 / pi^2 (angle_a - angle_b)^2,
//                alpha = v / (1 - iou + v + eps)
// The operations are torchvision's, in its order, so that proper boxes agree to rounding.
template <int kind, typename T>
C10_HOST_DEVICE inline T box_iou_family_pair(const BoxTerms<T>& a, const BoxTerms<T>& b, T eps) {
  const T ix1 = a.x1 > b.x1 ? a.x1 : b.x1;
  const T iy1 = a.y1 > b.y1 ? a.y1 : b.y1;
  const T ix2 = a.x2 < b.x2 ? a.x2 : b.x2;
  const T iy2 = a.y2 < b.y2 ? a.y2 : b.y2;
  const T iw = ix2 - ix1;
  const T ih = iy2 - iy1;
  const T inter = (iw > T(0) && ih > T(0)) ? iw * ih : T(0);
  const T uni = a.area + b.area - inter;
  const T iou = (a.area > T(0) && b.area > T(0)) ? inter / uni : T(0);
  if constexpr (kind == kBoxIou) {
    return iou;
  }
  // The enclosing box; a NaN side stays NaN (the comparison below is then false).
  const T cx1 = a.x1 < b.x1 ? a.x1 : b.x1;
  const T cy1 = a.y1 < b.y1 ? a.y1 : b.y1;
  const T cx2 = a.x2 > b.x2 ? a.x2 : b.x2;
  const T cy2 = a.y2 > b.y2 ? a.y2 : b.y2;
  T cw = cx2 - cx1;
  T ch = cy2 - cy1;
  cw = cw < T(0) ? T(0) : cw;
  ch = ch < T(0) ? T(0) : ch;
  if constexpr (kind == kGeneralizedBoxIou) {
    const T hull = cw * ch;
    return iou - ((hull > T(0)) ? (hull - uni) / hull : T(0));
  } else {
    const T diag2 = cw * cw + ch * ch + eps;
    const T dx = a.cx - b.cx;
    const T dy = a.cy - b.cy;
    const T diou = iou - (dx * dx + dy * dy) / diag2;
    if constexpr (kind == kDistanceBoxIou) {
      return diou;
    } else {
      const T da = a.angle - b.angle;
      const T v = static_cast<T>(0.40528473456935108577551785283891) * (da * da);  // 4 / pi^2
      const T alpha = v / (T(1) - iou + v + eps);
      return diou - alpha * v;
    }
  }
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
