// The steps of R-CNN box coding (roiops/box_coder.py states the formula), shared by the CPU and
// CUDA kernels. They reproduce the element-wise PyTorch formula BoxCoder used before the native
// ops, which equals torchvision's BoxCoder bit for bit, so every step rounds exactly as one PyTorch
// op does: computed in acc_t (float for float16 / bfloat16, else the dtype itself) and rounded to
// scalar_t, the tensor's dtype, before the next step reads it. exp and log are not here: each
// device applies its own PyTorch implementation of them between the steps (see the kernels).
//
// No product may be fused with the sum that follows it (an FMA rounds once where PyTorch rounds
// twice): on CUDA the helpers below use the _rn intrinsics, which the compiler never contracts; the
// CPU kernel file turns contraction off for its own functions.
#pragma once

#include <c10/macros/Macros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <type_traits>

namespace roiops {
namespace coding {

template <typename T>
C10_HOST_DEVICE inline T add(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, float>) {
    return __fadd_rn(a, b);
  } else if constexpr (std::is_same_v<T, double>) {
    return __dadd_rn(a, b);
  }
#endif
  return a + b;
}

template <typename T>
C10_HOST_DEVICE inline T sub(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, float>) {
    return __fsub_rn(a, b);
  } else if constexpr (std::is_same_v<T, double>) {
    return __dsub_rn(a, b);
  }
#endif
  return a - b;
}

template <typename T>
C10_HOST_DEVICE inline T mul(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, float>) {
    return __fmul_rn(a, b);
  } else if constexpr (std::is_same_v<T, double>) {
    return __dmul_rn(a, b);
  }
#endif
  return a * b;
}

template <typename T>
C10_HOST_DEVICE inline T div(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, float>) {
    return __fdiv_rn(a, b);
  } else if constexpr (std::is_same_v<T, double>) {
    return __ddiv_rn(a, b);
  }
#endif
  return a / b;
}

// The value an op of dtype scalar_t stores: acc_t rounded to scalar_t (a no-op for float, double).
template <typename scalar_t, typename acc_t>
C10_HOST_DEVICE inline acc_t round_to(acc_t x) {
  return static_cast<acc_t>(static_cast<scalar_t>(x));
}

// Width (or height) and centre of a box along one axis, from its two corners:
// size = hi - lo, centre = lo + 0.5 * size.
template <typename scalar_t, typename acc_t>
struct AxisFrame {
  acc_t size, centre;
  C10_HOST_DEVICE AxisFrame(acc_t lo, acc_t hi) {
    size = round_to<scalar_t>(sub(hi, lo));
    centre = round_to<scalar_t>(add(lo, round_to<scalar_t>(mul(acc_t(0.5), size))));
  }
};

// ---- encode: (dx, dy) = w_xy (g_ctr - p_ctr) / p_size;  (dw, dh) = w_wh log(g_size / p_size) ----

template <typename scalar_t, typename acc_t>
C10_HOST_DEVICE inline acc_t encode_centre(acc_t g_centre, acc_t p_centre, acc_t weight, acc_t p_size) {
  const acc_t offset = round_to<scalar_t>(mul(round_to<scalar_t>(sub(g_centre, p_centre)), weight));
  return round_to<scalar_t>(div(offset, p_size));
}

// The argument of the log.
template <typename scalar_t, typename acc_t>
C10_HOST_DEVICE inline acc_t encode_size_ratio(acc_t g_size, acc_t p_size) {
  return round_to<scalar_t>(div(g_size, p_size));
}

// From the log of encode_size_ratio.
template <typename scalar_t, typename acc_t>
C10_HOST_DEVICE inline acc_t encode_log_size(acc_t log_ratio, acc_t weight) {
  return round_to<scalar_t>(mul(log_ratio, weight));
}

// ---- decode: centre = (d_xy / w_xy) size + p_ctr;  half side = 0.5 exp(min(d_wh / w_wh, clip)) size ----

// (d / w) * size: the centre's offset, before the box centre is added (decode_centre).
template <typename scalar_t, typename acc_t>
C10_HOST_DEVICE inline acc_t decode_centre_offset(acc_t code, acc_t weight, acc_t size) {
  return round_to<scalar_t>(mul(round_to<scalar_t>(div(code, weight)), size));
}

template <typename scalar_t, typename acc_t>
C10_HOST_DEVICE inline acc_t decode_centre(acc_t offset, acc_t centre) {
  return round_to<scalar_t>(add(offset, centre));
}

// The argument of the exp: d / w clamped from above at clip. A NaN code stays NaN, as in
// torch.clamp (the comparison is false for NaN).
template <typename scalar_t, typename acc_t>
C10_HOST_DEVICE inline acc_t decode_log_size(acc_t code, acc_t weight, acc_t clip) {
  const acc_t t = round_to<scalar_t>(div(code, weight));
  return round_to<scalar_t>(t > clip ? clip : t);
}

// Half the decoded side, from the exp of decode_log_size: (exp * size) * 0.5, in that order.
template <typename scalar_t, typename acc_t>
C10_HOST_DEVICE inline acc_t decode_half_size(acc_t scale, acc_t size) {
  return round_to<scalar_t>(mul(round_to<scalar_t>(mul(scale, size)), acc_t(0.5)));
}

// Clamp of a decoded coordinate to [low, high] (clip_boxes_to_image: [0, width or height]); NaN
// stays NaN, as in torch.clamp.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t clamp_to_image(acc_t v, acc_t low, acc_t high) {
  const acc_t above = v < low ? low : v;
  return above > high ? high : above;
}

// The decoded box (x1, y1, x2, y2) from the centre codes (dx, dy), the weights (wx, wy), the exps
// (scale_w, scale_h) of the two decode_log_size arguments and the reference box's frames, each
// corner clamped to [low, max_x] or [low, max_y] (infinite bounds when not clipping to an image).
template <typename scalar_t, typename acc_t>
C10_HOST_DEVICE inline void decode_corners(acc_t dx, acc_t dy, acc_t wx, acc_t wy, acc_t scale_w, acc_t scale_h,
                                           const AxisFrame<scalar_t, acc_t>& fx,
                                           const AxisFrame<scalar_t, acc_t>& fy, acc_t low, acc_t max_x,
                                           acc_t max_y, acc_t out[4]) {
  const acc_t cx = decode_centre<scalar_t>(decode_centre_offset<scalar_t>(dx, wx, fx.size), fx.centre);
  const acc_t cy = decode_centre<scalar_t>(decode_centre_offset<scalar_t>(dy, wy, fy.size), fy.centre);
  const acc_t hw = decode_half_size<scalar_t>(scale_w, fx.size);
  const acc_t hh = decode_half_size<scalar_t>(scale_h, fy.size);
  out[0] = clamp_to_image(round_to<scalar_t>(sub(cx, hw)), low, max_x);
  out[1] = clamp_to_image(round_to<scalar_t>(sub(cy, hh)), low, max_y);
  out[2] = clamp_to_image(round_to<scalar_t>(add(cx, hw)), low, max_x);
  out[3] = clamp_to_image(round_to<scalar_t>(add(cy, hh)), low, max_y);
}

}  // namespace coding
}  // namespace roiops
