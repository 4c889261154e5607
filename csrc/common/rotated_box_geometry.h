// Rotated-box geometry shared by the CPU and CUDA kernels (box_iou_rotated, nms_rotated,
// roi_align_rotated).
//
// A rotated box is (x_ctr, y_ctr, width, height, angle) with the angle in degrees, Detectron2's
// convention: the box's local point (u, v) (u along its width, v along its height, both relative
// to the centre) sits at
//     x = x_ctr + u * cos(angle) + v * sin(angle),   y = y_ctr - u * sin(angle) + v * cos(angle)
// in image coordinates (y pointing down), i.e. a positive angle turns the box counter-clockwise
// as seen on screen. The rotation has determinant +1, so the corner order below is always
// counter-clockwise in the (x, y) plane's algebraic sense (positive shoelace area).
//
// Intersection areas are exact polygon clipping (Sutherland-Hodgman: one convex quadrilateral
// clipped by the four half-planes of the other), computed in a frame whose origin is the first
// box's centre: corners are then of the order of the box sizes, not of the coordinates, so two
// boxes far from the origin (1e6 pixels) keep the precision of small ones. What remains is the
// precision of the inputs themselves: a float32 centre at 1e6 is only known to 1/16 pixel.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

namespace roiops {

// sin and cos of an angle in degrees, exact (0 and +-1) at multiples of 90 degrees: the angle is
// reduced to [-45, 45] around the nearest quarter turn first, so a box at 90 or 180 degrees has
// exactly the corners of its axis-aligned twin.
template <typename T>
C10_HOST_DEVICE inline void sincos_degrees(T degrees, T* s, T* c) {
  T r = ::fmod(degrees, T(360));  // exact
  if (r < T(0)) {
    r += T(360);
  }
  const T quarter = ::floor(r / T(90) + T(0.5));
  const T rem = r - quarter * T(90);  // exact: r and quarter * 90 are within a factor of 2 or rem is tiny
  const T rad = rem * T(0.017453292519943295769);
  const T s0 = ::sin(rad), c0 = ::cos(rad);
  switch (static_cast<int>(quarter) & 3) {
    case 0:
      *s = s0;
      *c = c0;
      break;
    case 1:
      *s = c0;
      *c = -s0;
      break;
    case 2:
      *s = -s0;
      *c = -c0;
      break;
    default:
      *s = -c0;
      *c = s0;
      break;
  }
}

// A rotated box prepared for pairwise tests.
template <typename T>
struct RotatedBox {
  T cx, cy;    // centre
  T hw, hh;    // half width, half height
  T c, s;      // cos and sin of the angle
  T ex, ey;    // half extents of the axis-aligned bounds
  T area;      // width * height; 0 for an empty box or one with a non-finite value
};

template <typename T>
C10_HOST_DEVICE inline T abs_of(T v) {
  return v < T(0) ? -v : v;
}

// x - x is 0 for finite x, NaN for +-Inf and NaN.
template <typename T>
C10_HOST_DEVICE inline bool all_finite5(T a, T b, T c, T d, T e) {
  return (a - a) == T(0) && (b - b) == T(0) && (c - c) == T(0) && (d - d) == T(0) && (e - e) == T(0);
}

// A box with width or height <= 0, or any non-finite value, has area 0: IoU 0 with every box (no
// 0 / 0), so it is never suppressed and suppresses nothing.
template <typename T>
C10_HOST_DEVICE inline RotatedBox<T> make_rotated_box(T cx, T cy, T w, T h, T angle) {
  RotatedBox<T> b;
  b.cx = cx;
  b.cy = cy;
  b.hw = w * T(0.5);
  b.hh = h * T(0.5);
  const bool finite = all_finite5(cx, cy, w, h, angle);
  if (finite) {
    sincos_degrees(angle, &b.s, &b.c);
  } else {
    b.s = T(0);
    b.c = T(1);
  }
  const T area = w * h;
  b.area = (finite && w > T(0) && h > T(0) && (area - area) == T(0)) ? area : T(0);
  b.ex = abs_of(b.hw * b.c) + abs_of(b.hh * b.s);
  b.ey = abs_of(b.hw * b.s) + abs_of(b.hh * b.c);
  return b;
}

template <typename T>
struct Point2 {
  T x, y;
};

// The four corners of b, counter-clockwise, relative to the origin (ox, oy).
template <typename T>
C10_HOST_DEVICE inline void rotated_box_corners(const RotatedBox<T>& b, T ox, T oy, Point2<T> p[4]) {
  const T dx = b.cx - ox, dy = b.cy - oy;
  const T uc = b.hw * b.c, us = b.hw * b.s, vc = b.hh * b.c, vs = b.hh * b.s;
  // (u, v) = (+hw, +hh), (-hw, +hh), (-hw, -hh), (+hw, -hh)
  p[0] = {dx + uc + vs, dy - us + vc};
  p[1] = {dx - uc + vs, dy + us + vc};
  p[2] = {dx - uc - vs, dy + us - vc};
  p[3] = {dx + uc - vs, dy - us - vc};
}

// Clips the convex polygon in[0 .. n) by the half-plane left of the directed line a -> b (which
// keeps the inside of a counter-clockwise polygon); returns the vertex count written to out (at
// most n + 1). A crossing point is interpolated along the clipped edge with t = d_p / (d_p - d_q),
// which lies in [0, 1] because d_p and d_q have opposite signs: nearly parallel edges give points
// on the edge, never far away (as intersecting two nearly parallel lines would).
template <typename T>
C10_HOST_DEVICE inline int clip_half_plane(const Point2<T>* in, int n, Point2<T> a, Point2<T> b, Point2<T>* out) {
  const T ex = b.x - a.x, ey = b.y - a.y;
  int m = 0;
  if (n == 0) {
    return 0;
  }
  Point2<T> p = in[n - 1];
  T dp = ex * (p.y - a.y) - ey * (p.x - a.x);
  for (int i = 0; i < n; ++i) {
    const Point2<T> q = in[i];
    const T dq = ex * (q.y - a.y) - ey * (q.x - a.x);
    if ((dp > T(0) && dq < T(0)) || (dp < T(0) && dq > T(0))) {
      const T t = dp / (dp - dq);
      out[m++] = {p.x + t * (q.x - p.x), p.y + t * (q.y - p.y)};
    }
    if (dq >= T(0)) {
      out[m++] = q;
    }
    p = q;
    dp = dq;
  }
  return m;
}

// Shoelace area of a counter-clockwise polygon (>= 0 up to rounding).
template <typename T>
C10_HOST_DEVICE inline T polygon_area(const Point2<T>* p, int n) {
  T twice = T(0);
  for (int i = 0; i < n; ++i) {
    const Point2<T>& a = p[i];
    const Point2<T>& b = p[i + 1 < n ? i + 1 : 0];
    twice += a.x * b.y - a.y * b.x;
  }
  return twice * T(0.5);
}

// True when the axis-aligned bounds of a and b overlap with positive area: boxes that fail this
// cannot intersect.
template <typename T>
C10_HOST_DEVICE inline bool rotated_bounds_overlap(const RotatedBox<T>& a, const RotatedBox<T>& b) {
  return abs_of(b.cx - a.cx) < a.ex + b.ex && abs_of(b.cy - a.cy) < a.ey + b.ey;
}

// Area of the intersection of a and b (both with area > 0), in [0, min(area_a, area_b)].
template <typename T>
C10_HOST_DEVICE inline T rotated_box_intersection(const RotatedBox<T>& a, const RotatedBox<T>& b) {
  if (!rotated_bounds_overlap(a, b)) {
    return T(0);
  }
  const T small = a.area < b.area ? a.area : b.area;
  // Both axis-aligned (angles at multiples of 90 degrees, where sincos_degrees is exact): the
  // intersection is a rectangle, computed without clipping.
  if ((a.s == T(0) || a.c == T(0)) && (b.s == T(0) || b.c == T(0))) {
    const T dx = abs_of(b.cx - a.cx), dy = abs_of(b.cy - a.cy);
    // Overlap of [-ra, ra] and [d - rb, d + rb] (d >= 0): min(ra, d + rb) - max(-ra, d - rb).
    const T ox = (a.ex < dx + b.ex ? a.ex : dx + b.ex) - (-a.ex > dx - b.ex ? -a.ex : dx - b.ex);
    const T oy = (a.ey < dy + b.ey ? a.ey : dy + b.ey) - (-a.ey > dy - b.ey ? -a.ey : dy - b.ey);
    const T inter = (ox > T(0) && oy > T(0)) ? ox * oy : T(0);
    return inter < small ? inter : small;
  }
  Point2<T> pa[4], pb[4];
  rotated_box_corners(a, a.cx, a.cy, pa);
  rotated_box_corners(b, a.cx, a.cy, pb);
  // Each clip adds at most one vertex: 4 -> 5 -> 6 -> 7 -> 8.
  Point2<T> buf0[8], buf1[8];
  int n = 4;
  for (int i = 0; i < 4; ++i) {
    buf0[i] = pa[i];
  }
  Point2<T>* in = buf0;
  Point2<T>* out = buf1;
  for (int e = 0; e < 4 && n > 0; ++e) {
    n = clip_half_plane(in, n, pb[e], pb[(e + 1) & 3], out);
    Point2<T>* tmp = in;
    in = out;
    out = tmp;
  }
  T inter = n >= 3 ? polygon_area(in, n) : T(0);
  inter = inter > T(0) ? inter : T(0);
  return inter < small ? inter : small;
}

// True when a and b are the same rectangle by construction (equal centre, half sizes and
// rotation): their IoU is exactly 1, whatever the rounding of the clipping would say.
template <typename T>
C10_HOST_DEVICE inline bool same_rotated_box(const RotatedBox<T>& a, const RotatedBox<T>& b) {
  return a.cx == b.cx && a.cy == b.cy && a.hw == b.hw && a.hh == b.hh && a.c == b.c && a.s == b.s;
}

// IoU of two prepared boxes, in [0, 1]; 0 when either has area 0 (see make_rotated_box).
template <typename T>
C10_HOST_DEVICE inline T rotated_box_iou(const RotatedBox<T>& a, const RotatedBox<T>& b) {
  if (!(a.area > T(0) && b.area > T(0))) {
    return T(0);
  }
  if (same_rotated_box(a, b)) {
    return T(1);
  }
  const T inter = rotated_box_intersection(a, b);
  return inter / (a.area + b.area - inter);
}

// Loads row i of a [N, 5] (x_ctr, y_ctr, w, h, angle) array into a prepared box of type T.
template <typename T, typename scalar_t>
C10_HOST_DEVICE inline RotatedBox<T> load_rotated_box(const scalar_t* boxes, int64_t i) {
  const scalar_t* r = boxes + 5 * i;
  return make_rotated_box(static_cast<T>(r[0]), static_cast<T>(r[1]), static_cast<T>(r[2]), static_cast<T>(r[3]),
                          static_cast<T>(r[4]));
}

}  // namespace roiops
