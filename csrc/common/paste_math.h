// Mask pasting arithmetic shared by cpu/paste_masks.cpp and cuda/paste_masks.cu: where a mask
// lands in the image and which mask pixels (with which weights) each image pixel samples.
//
// The pixel model is torchvision's paste_masks_in_image (Mask R-CNN inference), reproduced
// operation for operation so that results agree bit for bit in float32:
//   1. The M x M mask is padded by one pixel of zeros on every side (S = M + 2 samples per axis),
//      and its box is grown about its centre by S / M so that the padding lands outside the box.
//   2. The grown box's corners are truncated toward zero to integers (x0, y0, x1, y1); the pasted
//      patch covers the inclusive pixel range x0..x1, y0..y1, i.e. w = x1 - x0 + 1 columns (at
//      least 1).
//   3. The padded mask is resized to h x w by bilinear interpolation with align_corners=False
//      (PyTorch's upsample_bilinear2d): output pixel i samples the padded mask at
//      (i + 0.5) * S / w - 0.5, clamped below at 0, between the two nearest samples.
//   4. The patch is written to the image where it overlaps it; pixels outside all boxes are 0.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

namespace roiops {

// Integer pixel extent of one pasted mask (inclusive corners) and the resized patch size.
struct PasteExtent {
  int64_t x0, y0, x1, y1;
  int64_t width, height;  // of the resized patch: x1 - x0 + 1 and y1 - y0 + 1, at least 1
  bool valid;             // false for a box with a non-finite coordinate (nothing is pasted)
};

template <typename T>
C10_HOST_DEVICE inline T paste_fma(T a, T b, T c) {
#ifdef __CUDA_ARCH__
  return ::fma(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// Truncation toward zero of a finite coordinate, as Tensor.to(torch.int64) does; coordinates
// beyond +-2^40 px are clamped first so the conversion is always defined.
template <typename T>
C10_HOST_DEVICE inline int64_t paste_truncate(T v) {
  const T limit = T(1099511627776.0);  // 2^40
  v = v < -limit ? -limit : (v > limit ? limit : v);
  return static_cast<int64_t>(v);
}

// Steps 1 and 2. scale_x = (M_w + 2) / M_w and scale_y likewise, rounded to T first (as
// torchvision multiplies a T tensor by a Python float). The arithmetic order is torchvision's:
// half sizes and centres first, then the half sizes scaled.
template <typename T>
C10_HOST_DEVICE inline PasteExtent paste_extent(T bx1, T by1, T bx2, T by2, T scale_x, T scale_y) {
  PasteExtent e{0, 0, 0, 0, 1, 1, false};
  const T half_w = (bx2 - bx1) * T(0.5) * scale_x;
  const T half_h = (by2 - by1) * T(0.5) * scale_y;
  const T cx = (bx2 + bx1) * T(0.5);
  const T cy = (by2 + by1) * T(0.5);
  const T x0 = cx - half_w, x1 = cx + half_w, y0 = cy - half_h, y1 = cy + half_h;
  // x - x == 0 is false exactly for inf and NaN.
  if (!(x0 - x0 == T(0) && x1 - x1 == T(0) && y0 - y0 == T(0) && y1 - y1 == T(0))) {
    return e;
  }
  e.x0 = paste_truncate(x0);
  e.x1 = paste_truncate(x1);
  e.y0 = paste_truncate(y0);
  e.y1 = paste_truncate(y1);
  e.width = e.x1 - e.x0 + 1 > 1 ? e.x1 - e.x0 + 1 : 1;
  e.height = e.y1 - e.y0 + 1 > 1 ? e.y1 - e.y0 + 1 : 1;
  e.valid = true;
  return e;
}

// Step 3 along one axis: the two padded-mask samples i0, i1 and weights l0, l1 that output index
// dst of a resize from in_size to out_size reads (PyTorch's align_corners=False rule; an
// identity resize copies). acc_t is the opmath type (float for float and the half types).
template <typename acc_t>
C10_HOST_DEVICE inline void paste_source_index(int64_t dst, int64_t in_size, int64_t out_size,
                                               int64_t* i0, int64_t* i1, acc_t* l0, acc_t* l1) {
  if (in_size == out_size) {
    *i0 = dst;
    *i1 = dst;
    *l0 = acc_t(1);
    *l1 = acc_t(0);
    return;
  }
  const acc_t ratio = static_cast<acc_t>(in_size) / static_cast<acc_t>(out_size);
  // ratio * (dst + 0.5) - 0.5, with one rounding (PyTorch's CPU build contracts it to an fma).
  acc_t src = paste_fma(ratio, static_cast<acc_t>(dst) + acc_t(0.5), acc_t(-0.5));
  src = src < acc_t(0) ? acc_t(0) : src;
  int64_t index = static_cast<int64_t>(src);  // src >= 0: truncation is floor
  index = index < in_size - 1 ? index : in_size - 1;
  acc_t lambda = src - static_cast<acc_t>(index);
  lambda = lambda < acc_t(0) ? acc_t(0) : (lambda > acc_t(1) ? acc_t(1) : lambda);
  *i0 = index;
  *i1 = index + (index < in_size - 1 ? 1 : 0);
  *l1 = lambda;
  *l0 = acc_t(1) - lambda;
}

// One value of the zero-padded mask: padded sample (py, px) is mask pixel (py - 1, px - 1).
template <typename scalar_t>
C10_HOST_DEVICE inline scalar_t padded_mask_at(const scalar_t* mask, int64_t mask_h, int64_t mask_w,
                                               int64_t py, int64_t px) {
  const int64_t y = py - 1, x = px - 1;
  return (y >= 0 && y < mask_h && x >= 0 && x < mask_w) ? mask[y * mask_w + x] : scalar_t(0);
}

// Step 3's arithmetic. PyTorch's CPU upsample_bilinear2d has two kernels that round differently,
// picked by output size; we follow the same one so that float32 results are identical to
// F.interpolate's (both are built with fused multiply-adds, hence the explicit fmas here):
//   - h + w <= 128: four taps with product weights, summed in a chain (paste_blend_four_tap);
//   - larger: separable, each padded-mask row blended along x, then two rows along y
//     (paste_lerp applied twice).
C10_HOST_DEVICE inline bool paste_uses_four_tap(int64_t height, int64_t width) {
  return height + width <= 128;
}

// a * w0 + b * w1 rounded as fma(a, w0, b * w1).
template <typename acc_t>
C10_HOST_DEVICE inline acc_t paste_lerp(acc_t a, acc_t b, acc_t w0, acc_t w1) {
  return paste_fma(a, w0, b * w1);
}

// v00 * wy0 * wx0 + v01 * wy0 * wx1 + v10 * wy1 * wx0 + v11 * wy1 * wx1, left to right.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t paste_blend_four_tap(acc_t v00, acc_t v01, acc_t v10, acc_t v11,
                                                  acc_t wx0, acc_t wx1, acc_t wy0, acc_t wy1) {
  acc_t sum = paste_fma(v00, wy0 * wx0, v01 * (wy0 * wx1));
  sum = paste_fma(v10, wy1 * wx0, sum);
  return paste_fma(v11, wy1 * wx1, sum);
}

}  // namespace roiops
