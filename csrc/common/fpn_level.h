// FPN level assignment (Lin et al. 2017, eq. 1), shared by the CPU and CUDA poolers: which pyramid
// level a RoI is pooled from.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace roiops {

// Index (0 .. k_max - k_min) of the pyramid level a RoI is pooled from, FPN (Lin et al. 2017)
// eq. 1: k = floor(k0 + log2(sqrt(w * h) / canonical_scale) + eps), clamped to [k_min, k_max].
// The box is in image pixels. Evaluated in T with the operation order of torchvision's
// LevelMapper (area = (x2 - x1) * (y2 - y1), sqrt, divide, log2, + k0, + 1e-6, floor), so that the
// same RoI lands on the same level. A box whose area is 0, negative or NaN goes to the finest level.
template <typename T>
C10_HOST_DEVICE inline int64_t fpn_level_index(T x1, T y1, T x2, T y2, T canonical_scale,
                                               int64_t canonical_level, int64_t k_min, int64_t k_max) {
  const T area = (x2 - x1) * (y2 - y1);
  if (!(area > T(0))) {
    return 0;
  }
  // Each libm call is rounded back to T at once so that the additions happen in T, as in torch.
  const T s = static_cast<T>(::sqrt(area));
  const T lg = static_cast<T>(::log2(s / canonical_scale));
  const T k = static_cast<T>(::floor(static_cast<T>(canonical_level) + lg + static_cast<T>(1e-6)));
  if (!(k > static_cast<T>(k_min))) {  // also NaN
    return 0;
  }
  if (k >= static_cast<T>(k_max)) {
    return k_max - k_min;
  }
  return static_cast<int64_t>(k) - k_min;
}

// The pyramid exponents k (a map's scale is 2^-k) of the finest and coarsest maps, from the first
// and last spatial scales, as torchvision computes them: -log2 of the float32 scale, truncated.
// Host code.
inline void fpn_level_range(const std::vector<double>& spatial_scales, int64_t* k_min, int64_t* k_max) {
  *k_min = static_cast<int64_t>(-std::log2(static_cast<float>(spatial_scales.front())));
  *k_max = static_cast<int64_t>(-std::log2(static_cast<float>(spatial_scales.back())));
}

}  // namespace roiops
