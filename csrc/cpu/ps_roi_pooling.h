// The CPU drivers of the position-sensitive RoI ops (ps_roi_align.cpp, ps_roi_pool.cpp). Both pool
// every bin as a weighted sum of map pixels of one channel per output channel
// (common/ps_roi_math.h, ps_input_channel); they differ only in which pixels, with which weights
// (bilinear samples or a quantized rectangle). The op supplies that as a Bins object (see
// ps_roi_forward_driver) and the drivers here do the rest.
//
// Both directions work per (image, bin): a bin touches only its own C_out input channels. A task
// copies the rows its RoIs read of those channel planes into a pixel-major scratch
// [H, W, kLanes] (one cache line per pixel for float), so that a pixel of a bin is one vector load
// and one vector add or multiply-add over the bin's output channels. Reading the channel planes
// in place instead costs C_out scalar loads per pixel, from C_out cache lines that the 300 RoIs of
// R-FCN visit in no order the prefetcher can follow: three quarters of the old kernel's time.
// In the backward a task owns its channels, so each gradient element has one writer and a fixed
// order of additions (RoIs in increasing index), whatever the thread count. Channels_last float
// maps and gradients skip the scratch, and so do NCHW float maps on cores with fast AVX-512
// gathers (ps_fast_gathers): a pixel's C_out values are one gather (GatheredPixels) or C_out
// scalar loads and stores (StridedPixels), with the same sums. The forward's results go through a
// staging buffer into the output (ps_roi_forward).
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "common/box_geometry.h"
#include "common/checks.h"
#include "common/memory_format.h"
#include "common/ps_roi_math.h"
#include "cpu/cpu_vendor.h"
#include "cpu/run_tasks.h"
#include "cpu/vectorized_layout.h"

namespace roiops {
namespace cpu {

// Output channels pooled together: one scratch pixel. 16 floats are one cache line and one
// AVX-512 register; R-FCN's 10 channels (9 classes and background) fit in one group.
constexpr int64_t kLanes = 16;

// acc[l] += x[l] and acc[l] += w * x[l] over the lanes: each lane is an independent sum, so the
// order of additions per output is the scalar one (PSRoIPool stays bit-identical to torchvision).
template <typename acc_t>
inline void lanes_add(acc_t* acc, const acc_t* x) {
#pragma GCC unroll 16
  for (int64_t l = 0; l < kLanes; ++l) {
    acc[l] += x[l];
  }
}

template <typename acc_t>
inline void lanes_fma(acc_t* acc, acc_t w, const acc_t* x) {
#pragma GCC unroll 16
  for (int64_t l = 0; l < kLanes; ++l) {
    acc[l] = std::fma(w, x[l], acc[l]);
  }
}

// Where the Bins' pool and scatter find the kLanes values of a map pixel (one per output channel of
// the group) and how they add them, so that one definition of a bin serves every pixel source:
// ScratchPixels (the drivers' pixel-major scratch), StridedPixels (the map itself, a scalar load
// or store per lane) and, for float maps on AVX-512, GatheredPixels (the map itself, one gather
// per pixel). Vec holds kLanes sums; every operation is lane by lane, and every source fuses its
// multiply-adds (one rounding, std::fma or the intrinsic), so they give the same bits: left to
// GCC, a * b + c is contracted as it sees fit, differently in different callers, and the two
// layouts, which may take different sources, must agree bit for bit.
template <typename acc_t>
struct LaneSums {
  struct Vec {
    acc_t v[kLanes];
  };

  static Vec zero() { return Vec{}; }
  static Vec load(const acc_t* x) {
    Vec a;
    std::copy(x, x + kLanes, a.v);
    return a;
  }
  static void store(const Vec& a, acc_t* out) { std::copy(a.v, a.v + kLanes, out); }
  static Vec sum(Vec a, const Vec& b) {
    lanes_add(a.v, b.v);
    return a;
  }
  static Vec times(Vec a, acc_t s) {
    for (int64_t l = 0; l < kLanes; ++l) {
      a.v[l] *= s;
    }
    return a;
  }
  static Vec over(Vec a, acc_t s) {
    for (int64_t l = 0; l < kLanes; ++l) {
      a.v[l] /= s;
    }
    return a;
  }
};

template <typename acc_t>
struct ScratchPixels : LaneSums<acc_t> {
  using Vec = typename LaneSums<acc_t>::Vec;
  acc_t* scratch;  // [H, W, kLanes]
  int64_t width;

  ScratchPixels(acc_t* scratch, int64_t width) : scratch(scratch), width(width) {}

  acc_t* at(int64_t r, int64_t c) const { return scratch + (r * width + c) * kLanes; }
  void add(Vec& s, int64_t r, int64_t c) const { lanes_add(s.v, at(r, c)); }                  // s += pixel
  void fma(Vec& s, acc_t w, int64_t r, int64_t c) const { lanes_fma(s.v, w, at(r, c)); }      // s += w pixel
  void add_to(int64_t r, int64_t c, const Vec& g) const { lanes_add(at(r, c), g.v); }          // pixel += g
  void fma_to(int64_t r, int64_t c, acc_t w, const Vec& g) const { lanes_fma(at(r, c), w, g.v); }  // pixel += w g
};

// The pixels of a float map read and written in place, a scalar load or read-modify-write per
// lane: lane l < G of pixel (r, c) is the element at base + r * row_stride + c * col_stride + l *
// channel_stride (the output channels' input channels of one bin); lanes G .. kLanes - 1 stay 0.
// G is a compile-time constant (with_group_size), so that the lanes' loops unroll into registers.
// Where gathers are slow (AMD), cheaper than GatheredPixels' gather per pixel, and AVX-512's
// scatter costs more than the scalar additions always: R-FCN at 2 threads, the op alone, AMD Zen 5,
// channels_last forward (gathers -> this) ps_roi_pool 0.35-0.47 -> 0.29-0.40 ms, ps_roi_align
// 0.50-0.68 -> 0.45-0.48 ms; channels_last backward (scatters -> this) ps_roi_pool 0.68-0.75 ->
// 0.42 ms, ps_roi_align 0.90-0.93 -> 0.59-0.60 ms.
template <int G>
struct StridedPixels : LaneSums<float> {
  float* base;
  int64_t row_stride, col_stride, channel_stride;

  StridedPixels(const float* base, int64_t row_stride, int64_t col_stride, int64_t channel_stride)
      : base(const_cast<float*>(base)), row_stride(row_stride), col_stride(col_stride),
        channel_stride(channel_stride) {}

  float* at(int64_t r, int64_t c) const { return base + r * row_stride + c * col_stride; }
  void add(Vec& s, int64_t r, int64_t c) const {
    const float* pixel = at(r, c);
#pragma GCC unroll 16
    for (int l = 0; l < G; ++l) {
      s.v[l] += pixel[l * channel_stride];
    }
  }
  void fma(Vec& s, float w, int64_t r, int64_t c) const {
    const float* pixel = at(r, c);
#pragma GCC unroll 16
    for (int l = 0; l < G; ++l) {
      s.v[l] = std::fma(w, pixel[l * channel_stride], s.v[l]);
    }
  }
  void add_to(int64_t r, int64_t c, const Vec& g) const {
    float* pixel = at(r, c);
#pragma GCC unroll 16
    for (int l = 0; l < G; ++l) {
      pixel[l * channel_stride] += g.v[l];
    }
  }
  void fma_to(int64_t r, int64_t c, float w, const Vec& g) const {
    float* pixel = at(r, c);
#pragma GCC unroll 16
    for (int l = 0; l < G; ++l) {
      pixel[l * channel_stride] = std::fma(w, g.v[l], pixel[l * channel_stride]);
    }
  }
};

// The batch index of every RoI (rois: [K, 5] contiguous). Raises a ValueError naming the first RoI
// whose rois[k, 0] is not an integer in [0, batch_size), so no kernel reads outside the input.
template <typename scalar_t>
std::vector<int64_t> ps_roi_batch_indices(const char* op, const at::Tensor& rois, int64_t batch_size) {
  const scalar_t* r = rois.const_data_ptr<scalar_t>();
  std::vector<int64_t> batch(rois.size(0));
  for (int64_t k = 0; k < rois.size(0); ++k) {
    const double b = static_cast<double>(r[5 * k]);
    TORCH_CHECK_VALUE(is_batch_index(b, batch_size), op, ": rois[", k,
                      ", 0] (the batch index) must be an integer in [0, ", batch_size, "), got ", b);
    batch[k] = static_cast<int64_t>(b);
  }
  return batch;
}

// RoIs of every image: order[offsets[n] .. offsets[n + 1]) in increasing index.
struct RoisByImage {
  std::vector<int64_t> offsets, order;
  RoisByImage(const std::vector<int64_t>& batch, int64_t batch_size) : offsets(batch_size + 1, 0), order(batch.size()) {
    for (const int64_t b : batch) {
      ++offsets[b + 1];
    }
    for (int64_t n = 0; n < batch_size; ++n) {
      offsets[n + 1] += offsets[n];
    }
    std::vector<int64_t> fill(offsets.begin(), offsets.end() - 1);
    for (size_t k = 0; k < batch.size(); ++k) {
      order[fill[batch[k]]++] = static_cast<int64_t>(k);
    }
  }
};

// This thread's scratch of at least n elements, kept between calls: a fresh buffer of R-FCN's
// 243 KB per task would come from mmap and fault in its pages on every call.
template <typename acc_t>
acc_t* ps_scratch(int64_t n) {
  thread_local std::vector<acc_t> scratch;
  if (static_cast<int64_t>(scratch.size()) < n) {
    scratch.resize(n);
  }
  return scratch.data();
}

// rows[(n * PH + ph) * height + r] = 1 where some RoI of image n reads map row r at bin row ph:
// the rows a task copies into (or back from) its scratch. Once per call, not once per bin.
template <typename Bins>
std::vector<char> ps_rows_read(const Bins& bins, const RoisByImage& by_image, int64_t batch_size,
                               int64_t pooled_height, int64_t height) {
  std::vector<char> rows(batch_size * pooled_height * height, 0);
  for (int64_t n = 0; n < batch_size; ++n) {
    for (int64_t j = by_image.offsets[n]; j < by_image.offsets[n + 1]; ++j) {
      for (int64_t ph = 0; ph < pooled_height; ++ph) {
        int64_t r0, r1;
        bins.rows(by_image.order[j], ph, &r0, &r1);
        std::fill(rows.begin() + (n * pooled_height + ph) * height + r0,
                  rows.begin() + (n * pooled_height + ph) * height + r1, char(1));
      }
    }
  }
  return rows;
}

// Adds bin (ph, pw) of output channels [c0, c0 + group) of RoI k (grad: element strides
// grad_stride) into the pixels; a bin with a zero gradient in every channel adds nothing.
template <typename scalar_t, typename acc_t, typename Pixels, typename Bins>
void ps_scatter_roi_bin(const scalar_t* grad, const int64_t* grad_stride, int64_t k, int64_t c0, int64_t group,
                        int64_t ph, int64_t pw, const Pixels& pixels, const Bins& bins_of) {
  alignas(64) acc_t g[kLanes];
  const scalar_t* gk = grad + k * grad_stride[0] + c0 * grad_stride[1] + ph * grad_stride[2] + pw * grad_stride[3];
  bool any = false;
  for (int64_t l = 0; l < kLanes; ++l) {
    g[l] = l < group ? static_cast<acc_t>(gk[l * grad_stride[1]]) : acc_t(0);
    any = any || g[l] != acc_t(0);
  }
  if (any) {
    bins_of.scatter(k, ph, pw, g, pixels);
  }
}

// ps_scatter_roi_bin for every RoI of image n, in increasing index.
template <typename scalar_t, typename acc_t, typename Pixels, typename Bins>
void ps_scatter_bin(const scalar_t* grad, const int64_t* grad_stride, const RoisByImage& by_image, int64_t n,
                    int64_t c0, int64_t group, int64_t ph, int64_t pw, const Pixels& pixels, const Bins& bins_of) {
  for (int64_t j = by_image.offsets[n]; j < by_image.offsets[n + 1]; ++j) {
    ps_scatter_roi_bin<scalar_t, acc_t>(grad, grad_stride, by_image.order[j], c0, group, ph, pw, pixels, bins_of);
  }
}

// The map rows [*top, *bottom) that RoI k reads in any bin (Bins::rows per bin row); empty: 0, 0.
template <typename Bins>
void ps_roi_rows(const Bins& bins_of, int64_t k, int64_t pooled_height, int64_t* top, int64_t* bottom) {
  *top = *bottom = 0;
  for (int64_t ph = 0; ph < pooled_height; ++ph) {
    int64_t r0, r1;
    bins_of.rows(k, ph, &r0, &r1);
    if (r0 < r1) {
      *top = *top < *bottom ? std::min(*top, r0) : r0;
      *bottom = std::max(*bottom, r1);
    }
  }
}

// Calls fn(std::integral_constant<int, G>) for the run-time group size 1 <= G <= kLanes, so that
// code specialised for it (unrolled register transposes) runs.
template <typename Fn>
inline void with_group_size(int64_t group, Fn fn) {
  static_assert(kLanes == 16, "cases 1 .. 16 below");
  switch (group) {
#define ROIOPS_PS_GROUP(G)                  \
  case G:                                   \
    fn(std::integral_constant<int, G>());   \
    break;
    ROIOPS_PS_GROUP(1)
    ROIOPS_PS_GROUP(2)
    ROIOPS_PS_GROUP(3)
    ROIOPS_PS_GROUP(4)
    ROIOPS_PS_GROUP(5)
    ROIOPS_PS_GROUP(6)
    ROIOPS_PS_GROUP(7)
    ROIOPS_PS_GROUP(8)
    ROIOPS_PS_GROUP(9)
    ROIOPS_PS_GROUP(10)
    ROIOPS_PS_GROUP(11)
    ROIOPS_PS_GROUP(12)
    ROIOPS_PS_GROUP(13)
    ROIOPS_PS_GROUP(14)
    ROIOPS_PS_GROUP(15)
    ROIOPS_PS_GROUP(16)
#undef ROIOPS_PS_GROUP
    default:
      break;
  }
}

// scratch[p * kLanes + g] = planes[g * plane_stride + p] for the pixels [p0, p1) of G <= kLanes
// contiguous planes; lanes G .. kLanes - 1 are 0 (they are pooled, never stored).
template <typename scalar_t, typename acc_t>
void planes_to_lanes(const scalar_t* planes, int64_t plane_stride, int64_t group, int64_t p0, int64_t p1,
                     acc_t* scratch) {
  int64_t p = p0;
#if defined(ROIOPS_TRANSPOSE_16X16)
  if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<acc_t, float>) {
    with_group_size(group, [&](auto g) {
      for (; p + 16 <= p1; p += 16) {
        transpose_16x16<decltype(g)::value, 16>(planes + p, plane_stride, scratch + p * kLanes, kLanes);
      }
      if (p < p1 && p1 - p0 >= 16) {  // the last 16 pixels, some of them again: no scalar tail
        p = p1 - 16;
        transpose_16x16<decltype(g)::value, 16>(planes + p, plane_stride, scratch + p * kLanes, kLanes);
        p = p1;
      }
    });
  }
#endif
  for (; p < p1; ++p) {
    for (int64_t g = 0; g < kLanes; ++g) {
      scratch[p * kLanes + g] = g < group ? static_cast<acc_t>(planes[g * plane_stride + p]) : acc_t(0);
    }
  }
}

// The inverse for the backward: planes[g * plane_stride + p] = scratch[p * kLanes + g], g < G.
template <typename acc_t>
void lanes_to_planes(const acc_t* scratch, int64_t group, int64_t p0, int64_t p1, acc_t* planes,
                     int64_t plane_stride) {
  int64_t p = p0;
#if defined(ROIOPS_TRANSPOSE_16X16)
  if constexpr (std::is_same_v<acc_t, float>) {
    with_group_size(group, [&](auto g) {
      for (; p + 16 <= p1; p += 16) {
        transpose_16x16<16, decltype(g)::value>(scratch + p * kLanes, kLanes, planes + p, plane_stride);
      }
    });
  }
#endif
  for (; p < p1; ++p) {
    for (int64_t g = 0; g < group; ++g) {
      planes[g * plane_stride + p] = scratch[p * kLanes + g];
    }
  }
}

// out[k, c, ph, pw] (element strides out_stride: k, c, h, w) = staged[(k * bins + ph * PW + pw) *
// lanes + c] for the RoIs [k0, k1): the forward's results, which its tasks store one vector per RoI
// and bin. Stored straight into a NCHW output instead, they are C_out scalar stores per RoI and bin
// into cache lines that 16 bins, run by both threads, share: a tenth of R-FCN's ps_roi_align
// forward at 2 threads.
template <typename scalar_t, typename acc_t>
void ps_unstage(const acc_t* staged, int64_t lanes, int64_t k0, int64_t k1, int64_t channels_out,
                int64_t pooled_width, int64_t bins, scalar_t* out, const int64_t* out_stride) {
#if defined(ROIOPS_TRANSPOSE_16X16)
  if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<acc_t, float>) {
    if (bins >= 16 && out_stride[1] == bins && out_stride[2] == pooled_width && out_stride[3] == 1) {
      for (int64_t k = k0; k < k1; ++k) {
        for (int64_t c0 = 0; c0 < channels_out; c0 += kLanes) {
          with_group_size(std::min(kLanes, channels_out - c0), [&](auto g) {
            const auto block = [&](int64_t b0) {  // bins b0 .. b0 + 15 of channels c0 .. c0 + G - 1
              transpose_16x16<16, decltype(g)::value>(staged + (k * bins + b0) * lanes + c0, lanes,
                                                      out + k * out_stride[0] + c0 * bins + b0, bins);
            };
            int64_t b0 = 0;
            for (; b0 + 16 <= bins; b0 += 16) {
              block(b0);
            }
            if (b0 < bins) {
              block(bins - 16);  // the last 16 bins, some of them again
            }
          });
        }
      }
      return;
    }
  }
#endif
  for (int64_t k = k0; k < k1; ++k) {
    for (int64_t bin = 0; bin < bins; ++bin) {
      const acc_t* v = staged + (k * bins + bin) * lanes;
      scalar_t* o =
          out + k * out_stride[0] + (bin / pooled_width) * out_stride[2] + (bin % pooled_width) * out_stride[3];
      for (int64_t c = 0; c < channels_out; ++c) {
        o[c * out_stride[1]] = static_cast<scalar_t>(v[c]);
      }
    }
  }
}
// input as NCHW planes for the scratch drivers: itself when it is contiguous, else a copy. A
// channels_last map (of a dtype other than float: float maps are read in place) is transposed by
// transpose_map_layout's tiles, which keep a tile's pixels in cache: R-FCN's ps_roi_pool forward
// at 2 threads, against Tensor::contiguous, 2.40 -> 1.68-1.79 ms for float64, 0.92-0.93 -> 0.80-0.90
// ms for bfloat16 (AMD Zen 5).
template <typename scalar_t>
at::Tensor ps_nchw_planes(const at::Tensor& input) {
  if (input.is_contiguous()) {
    return input;
  }
  if (!input.is_contiguous(at::MemoryFormat::ChannelsLast) || input.numel() == 0) {
    return input.contiguous();
  }
  at::Tensor out = at::empty(input.sizes(), input.options());
  transpose_map_layout(input.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), input.size(0),
                       input.size(1), input.size(2) * input.size(3), /*to_pixels=*/false);
  return out;
}

// out[k, c_out, ph, pw] (element strides out_stride: n, c, h, w) for every RoI k, from input
// ([batch_size, C_out * PH * PW, height, width], NCHW-contiguous). Bins supplies, for RoI k:
//   rows(k, ph, &r0, &r1): the map rows [r0, r1) that bin row ph reads;
//   pool(k, ph, pw, pixels, acc): acc[l] = bin (ph, pw) pooled from lane l of the pixels (a source
//     above: ScratchPixels or GatheredPixels; acc: kLanes values, 64-byte aligned for float);
//   scatter(k, ph, pw, g, pixels): the adjoint, adding lane l of g into the pixels.
// Tasks are (image, bin): the rows the image's RoIs read of the bin's planes (10 x 50 x 76 floats
// for R-FCN) are copied once into the scratch, then every RoI of the image pools from it into a
// staging buffer, which ps_unstage lays out as the output.
template <typename scalar_t, typename acc_t, typename Bins>
void ps_roi_forward_driver(const scalar_t* input, const std::vector<int64_t>& batch, int64_t batch_size,
                           int64_t channels_out, int64_t pooled_height, int64_t pooled_width, int64_t height,
                           int64_t width, acc_t* staged, int64_t lanes, const Bins& bins_of) {
  const int64_t bins = pooled_height * pooled_width, plane = height * width;
  const int64_t cstride = ps_channel_stride(pooled_height, pooled_width) * plane;
  const RoisByImage by_image(batch, batch_size);
  const std::vector<char> rows_read = ps_rows_read(bins_of, by_image, batch_size, pooled_height, height);
  at::parallel_for(0, batch_size * bins, 1, [&](int64_t begin, int64_t end) {
    acc_t* scratch = ps_scratch<acc_t>(plane * kLanes);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / bins, bin = task % bins;
      const int64_t ph = bin / pooled_width, pw = bin % pooled_width;
      if (by_image.offsets[n] == by_image.offsets[n + 1]) {
        continue;
      }
      const char* rows = rows_read.data() + (n * pooled_height + ph) * height;
      for (int64_t c0 = 0; c0 < channels_out; c0 += kLanes) {
        const int64_t group = std::min(kLanes, channels_out - c0);
        const scalar_t* planes =
            input + (n * bins * channels_out + ps_input_channel(c0, ph, pw, pooled_height, pooled_width)) * plane;
        for_each_run(rows, height, [&](int64_t r0, int64_t r1) {
          planes_to_lanes(planes, cstride, group, r0 * width, r1 * width, scratch);
        });
        for (int64_t j = by_image.offsets[n]; j < by_image.offsets[n + 1]; ++j) {
          const int64_t k = by_image.order[j];
          bins_of.pool(k, ph, pw, ScratchPixels<acc_t>{scratch, width}, staged + (k * bins + bin) * lanes + c0);
        }
      }
    }
  });
}

// Where lane 0 of pixel (0, 0) of output channels c0 .. at bin (ph, pw) of image n of a float map
// ([N, C_out * PH * PW, H, W], element strides stride) lies; the lanes are
// ps_channel_stride(PH, PW) * stride[1] elements apart.
inline const float* ps_bin_base(const float* map, const int64_t* stride, int64_t n, int64_t c0, int64_t ph,
                                int64_t pw, int64_t pooled_height, int64_t pooled_width) {
  return map + n * stride[0] + ps_input_channel(c0, ph, pw, pooled_height, pooled_width) * stride[1];
}

// StridedPixels of output channels [c0, c0 + G) at bin (ph, pw) of image n of such a map.
template <int G>
StridedPixels<G> ps_strided_pixels(const float* map, const int64_t* stride, int64_t n, int64_t c0, int64_t ph,
                                   int64_t pw, int64_t pooled_height, int64_t pooled_width) {
  return StridedPixels<G>(ps_bin_base(map, stride, n, c0, ph, pw, pooled_height, pooled_width), stride[2], stride[3],
                          ps_channel_stride(pooled_height, pooled_width) * stride[1]);
}

// StridedPixels that add only into the rows [row0, row1): the channels_last backward's tasks own
// bands of rows, and a bin across a band's edge adds into each band's rows from that band's task.
template <int G>
struct BandPixels : StridedPixels<G> {
  using Vec = typename StridedPixels<G>::Vec;
  int64_t row0, row1;

  BandPixels(const StridedPixels<G>& pixels, int64_t row0, int64_t row1)
      : StridedPixels<G>(pixels), row0(row0), row1(row1) {}

  void add_to(int64_t r, int64_t c, const Vec& g) const {
    if (r >= row0 && r < row1) {
      StridedPixels<G>::add_to(r, c, g);
    }
  }
  void fma_to(int64_t r, int64_t c, float w, const Vec& g) const {
    if (r >= row0 && r < row1) {
      StridedPixels<G>::fma_to(r, c, w, g);
    }
  }
};

#if defined(__AVX512F__)
// The pixels of a float map read in place with one masked AVX-512 gather per pixel: lane l of
// pixel (r, c) is the element at base + r * row_stride + c * col_stride + index[l], index[l] = l *
// channel_stride for the group's lanes (the output channels' input channels of one bin). Read
// only: the backward adds with StridedPixels, since AVX-512's scatter costs more than the scalar
// additions it would replace.
struct GatheredPixels {
  using Vec = __m512;
  const float* base;
  int64_t row_stride, col_stride;
  __m512i index;
  __mmask16 mask;

  GatheredPixels(const float* base, int64_t row_stride, int64_t col_stride, int64_t channel_stride, int64_t group)
      : base(base), row_stride(row_stride), col_stride(col_stride),
        index(_mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                 _mm512_set1_epi32(static_cast<int32_t>(channel_stride)))),
        mask(static_cast<__mmask16>((1u << group) - 1)) {}

  static Vec zero() { return _mm512_setzero_ps(); }
  static Vec load(const float* x) { return _mm512_loadu_ps(x); }
  static void store(Vec a, float* out) { _mm512_storeu_ps(out, a); }
  static Vec sum(Vec a, Vec b) { return _mm512_add_ps(a, b); }
  static Vec times(Vec a, float s) { return _mm512_mul_ps(a, _mm512_set1_ps(s)); }
  static Vec over(Vec a, float s) { return _mm512_div_ps(a, _mm512_set1_ps(s)); }
  Vec get(int64_t r, int64_t c) const {
    return _mm512_mask_i32gather_ps(zero(), mask, index, base + r * row_stride + c * col_stride, 4);
  }
  void add(Vec& s, int64_t r, int64_t c) const { s = _mm512_add_ps(s, get(r, c)); }
  void fma(Vec& s, float w, int64_t r, int64_t c) const {
    s = _mm512_fmadd_ps(_mm512_set1_ps(w), get(r, c), s);
  }
};

// Whether float maps are read in place with AVX-512 gathers (GatheredPixels) rather than without
// them: AVX-512 gathers are fast on Intel's cores and slow on AMD's. Without them, a NCHW map is
// pooled through the scratch (ps_roi_forward_driver) and a channels_last one read with scalar loads
// (StridedPixels). R-FCN's forward at 2 threads, the op alone, gathers -> without: Intel Xeon
// (AVX-512 and AMX) NCHW ps_roi_pool 0.41-0.43 -> 0.49-0.52 ms, ps_roi_align 0.58 -> 0.66-0.71 ms;
// AMD Zen 5 NCHW ps_roi_pool 0.28-0.33 -> 0.21-0.26 ms, ps_roi_align 0.39-0.51 -> 0.26-0.37 ms, and
// channels_last as StridedPixels says; on another Intel host of the same kind, NCHW ps_roi_pool
// 0.43 either way, ps_roi_align 0.56 -> 0.49 ms (so on Intel the choice is close). Every way
// gives the same bits. ROIOPS_PS_GATHERS=1 or 0 overrides the choice, so that the tests run both
// on any machine.
inline bool ps_fast_gathers() { return intel_unless_overridden("ROIOPS_PS_GATHERS"); }

// Whether a float map (the input, or the input's gradient, any strides) can be read in place by
// GatheredPixels: the lanes' offsets fit the gather's 32-bit indices.
inline bool ps_gathers_suit(const at::Tensor& map, int64_t channels_out, int64_t bins) {
  const int64_t group = std::min(kLanes, channels_out);
  return map.scalar_type() == at::kFloat && map.numel() > 0 && (group - 1) * bins * map.stride(1) <= INT32_MAX;
}

// One bin of one RoI, out of line: inlined into the driver's loops, GCC kept the bin's column
// counter on the stack, a store and a load around every gather.
template <typename Bins>
__attribute__((noinline)) void ps_pool_gathered(const Bins& bins_of, int64_t k, int64_t ph, int64_t pw,
                                                const GatheredPixels& pixels, float* acc) {
  bins_of.pool(k, ph, pw, pixels, acc);
}

#endif

// ps_roi_forward_driver for a float map read in place, with no scratch: each pixel of a bin is one
// gather of its output channels' values (gathers: AVX-512 only, ps_gathers_suit) or their scalar
// loads (StridedPixels; the caller takes them for channels_last maps only). Tasks follow the layout:
// over NCHW planes, (image, bin) as ps_roi_forward_driver, so that a task's 10 planes stay in the
// L2 cache while its RoIs read them; over a channels_last map, where a pixel's channels for all
// bins share cache lines, RoIs, each pooling all its bins from the lines its pixels hold, in order
// of their top rows, so that a thread's consecutive RoIs overlap. Against the scratch's transposes
// of every row read, R-FCN's forward at 2 threads with gathers (Intel Xeon with AVX-512, median of
// 150 calls, the same process as torchvision): ps_roi_pool 0.49-0.52 -> 0.41-0.43 ms over NCHW
// planes, 0.95 -> 0.57 ms channels_last; ps_roi_align 0.66-0.71 -> 0.58 ms and 1.32 -> 0.75 ms.
template <typename Bins>
void ps_roi_forward_in_place(const at::Tensor& input, const std::vector<int64_t>& batch, int64_t channels_out,
                             int64_t pooled_height, int64_t pooled_width, bool gathers, float* staged,
                             int64_t lanes, const Bins& bins_of) {
  const int64_t batch_size = input.size(0), bins = pooled_height * pooled_width;
  const int64_t num_rois = static_cast<int64_t>(batch.size());
  const int64_t stride[4] = {input.stride(0), input.stride(1), input.stride(2), input.stride(3)};
  const float* map = input.const_data_ptr<float>();
  const auto pool_rois = [&](int64_t n, int64_t bin, const int64_t* rois, int64_t count) {
    const int64_t ph = bin / pooled_width, pw = bin % pooled_width;
    for (int64_t c0 = 0; c0 < channels_out; c0 += kLanes) {
      const int64_t group = std::min(kLanes, channels_out - c0);
#if defined(__AVX512F__)
      if (gathers) {
        const GatheredPixels pixels(ps_bin_base(map, stride, n, c0, ph, pw, pooled_height, pooled_width), stride[2],
                                    stride[3], ps_channel_stride(pooled_height, pooled_width) * stride[1], group);
        for (int64_t j = 0; j < count; ++j) {
          ps_pool_gathered(bins_of, rois[j], ph, pw, pixels, staged + (rois[j] * bins + bin) * lanes + c0);
        }
        continue;
      }
#endif
      with_group_size(group, [&](auto g) {
        const auto pixels =
            ps_strided_pixels<decltype(g)::value>(map, stride, n, c0, ph, pw, pooled_height, pooled_width);
        for (int64_t j = 0; j < count; ++j) {
          bins_of.pool(rois[j], ph, pw, pixels, staged + (rois[j] * bins + bin) * lanes + c0);
        }
      });
    }
  };
  if (use_channels_last(input)) {
    // RoIs by image and top row, so that a thread's consecutive RoIs overlap and find their pixels'
    // lines in its cache.
    std::vector<int64_t> order(num_rois), top(num_rois);
    for (int64_t k = 0; k < num_rois; ++k) {
      int64_t bottom;
      ps_roi_rows(bins_of, k, pooled_height, &top[k], &bottom);
      order[k] = k;
    }
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return batch[a] != batch[b] ? batch[a] < batch[b] : top[a] != top[b] ? top[a] < top[b] : a < b;
    });
    // Four RoIs a task, handed out as threads free up (run_tasks): RoIs differ in area, and equal
    // shares of R-FCN's 300 left one thread 13% longer at work than the other (0.6% this way).
    constexpr int64_t kRoisPerTask = 4;
    run_tasks((num_rois + kRoisPerTask - 1) / kRoisPerTask, at::get_num_threads(), [&](int64_t task) {
      for (int64_t i = task * kRoisPerTask; i < std::min(num_rois, (task + 1) * kRoisPerTask); ++i) {
        for (int64_t bin = 0; bin < bins; ++bin) {
          pool_rois(batch[order[i]], bin, &order[i], 1);
        }
      }
    });
    return;
  }
  const RoisByImage by_image(batch, batch_size);
  at::parallel_for(0, batch_size * bins, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / bins;
      const int64_t* rois = by_image.order.data() + by_image.offsets[n];
      pool_rois(n, task % bins, rois, by_image.offsets[n + 1] - by_image.offsets[n]);
    }
  });
}

// out ([K, C_out, PH, PW], any strides) for every RoI from input ([batch_size, C_out * PH * PW,
// height, width], NCHW or channels_last): one of the drivers above into a staging buffer, then
// ps_unstage. Bins: as ps_roi_forward_driver. A channels_last float map is read in place
// (ps_roi_forward_in_place, with AVX-512 gathers where they are fast, ps_fast_gathers, else scalar
// loads), and so is a NCHW one where gathers are fast; any other map is pooled from the scratch, a
// channels_last one after its transpose to NCHW planes (ps_nchw_planes). Scalar loads against that
// transpose, in an AVX2 build (-march=haswell) run on AMD Zen 5, R-FCN at 2 threads, the op alone:
// ps_roi_pool 0.64-1.08 -> 0.50-0.99 ms, ps_roi_align 0.60-1.32 -> 0.49-1.14 ms.
template <typename scalar_t, typename acc_t, typename Bins>
void ps_roi_forward(const at::Tensor& input, const std::vector<int64_t>& batch, int64_t channels_out,
                    int64_t pooled_height, int64_t pooled_width, at::Tensor& out, const Bins& bins_of) {
  const int64_t batch_size = input.size(0), height = input.size(2), width = input.size(3);
  const int64_t bins = pooled_height * pooled_width, num_rois = static_cast<int64_t>(batch.size());
  const int64_t lanes = (channels_out + kLanes - 1) / kLanes * kLanes;
  const at::Tensor staged_tensor =
      at::empty({num_rois * bins * lanes}, at::TensorOptions().dtype(c10::CppTypeToScalarType<acc_t>::value));
  acc_t* staged = staged_tensor.mutable_data_ptr<acc_t>();  // [K, bins, lanes]
  bool done = false;
  if constexpr (std::is_same_v<scalar_t, float>) {
    bool gathers = false;
#if defined(__AVX512F__)
    gathers = ps_fast_gathers() && ps_gathers_suit(input, channels_out, bins);
#endif
    if (input.numel() > 0 && (use_channels_last(input) || gathers)) {
      ps_roi_forward_in_place(input, batch, channels_out, pooled_height, pooled_width, gathers, staged, lanes,
                              bins_of);
      done = true;
    }
  }
  if (!done) {
    const at::Tensor planes = ps_nchw_planes<scalar_t>(input);
    ps_roi_forward_driver<scalar_t, acc_t>(planes.const_data_ptr<scalar_t>(), batch, batch_size, channels_out,
                                           pooled_height, pooled_width, height, width, staged, lanes, bins_of);
  }
  const int64_t out_stride[4] = {out.stride(0), out.stride(1), out.stride(2), out.stride(3)};
  scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, num_rois, 16, [&](int64_t begin, int64_t end) {
    ps_unstage(staged, lanes, begin, end, channels_out, pooled_width, bins, out_data, out_stride);
  });
}

// grad_input ([batch_size, C, height, width], NCHW-contiguous planes, acc_t, uninitialised) = the
// adjoint of the forward applied to grad ([K, C_out, PH, PW], element strides grad_stride).
// Every element receives its additions in one fixed order (RoIs by increasing index, then the
// bin's pixels), so the result does not depend on the thread count.
template <typename scalar_t, typename acc_t, typename Bins>
void ps_roi_backward_driver(const scalar_t* grad, const int64_t* grad_stride, const std::vector<int64_t>& batch,
                            int64_t batch_size, int64_t channels_out, int64_t pooled_height, int64_t pooled_width,
                            int64_t height, int64_t width, acc_t* grad_input, const Bins& bins_of) {
  const int64_t bins = pooled_height * pooled_width, plane = height * width;
  const int64_t cstride = ps_channel_stride(pooled_height, pooled_width) * plane;
  const RoisByImage by_image(batch, batch_size);
  const std::vector<char> rows_read = ps_rows_read(bins_of, by_image, batch_size, pooled_height, height);
  at::parallel_for(0, batch_size * bins, 1, [&](int64_t begin, int64_t end) {
    acc_t* scratch = ps_scratch<acc_t>(plane * kLanes);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / bins, bin = task % bins;
      const int64_t ph = bin / pooled_width, pw = bin % pooled_width;
      const char* rows = rows_read.data() + (n * pooled_height + ph) * height;
      for (int64_t c0 = 0; c0 < channels_out; c0 += kLanes) {
        const int64_t group = std::min(kLanes, channels_out - c0);
        acc_t* planes =
            grad_input + (n * bins * channels_out + ps_input_channel(c0, ph, pw, pooled_height, pooled_width)) * plane;
        for_each_run(rows, height, [&](int64_t r0, int64_t r1) {
          std::fill(scratch + r0 * width * kLanes, scratch + r1 * width * kLanes, acc_t(0));
        });
        ps_scatter_bin<scalar_t, acc_t>(grad, grad_stride, by_image, n, c0, group, ph, pw,
                                        ScratchPixels<acc_t>{scratch, width}, bins_of);
        // Rows no RoI reads get 0; the others their sums, transposed back into the planes.
        int64_t done = 0;
        for_each_run(rows, height, [&](int64_t r0, int64_t r1) {
          for (int64_t i = 0; i < group; ++i) {
            std::fill(planes + i * cstride + done * width, planes + i * cstride + r0 * width, acc_t(0));
          }
          lanes_to_planes(scratch, group, r0 * width, r1 * width, planes, cstride);
          done = r1;
        });
        for (int64_t i = 0; i < group; ++i) {
          std::fill(planes + i * cstride + done * width, planes + i * cstride + plane, acc_t(0));
        }
      }
    }
  });
}

// ps_roi_backward_driver into a channels_last float gradient ([N, H, W, C]), in place, with no
// scratch (StridedPixels: the group's scalar additions per pixel of a bin). Tasks are
// bands of rows of one image, of at most 1 MB (the band stays in the L2 cache while the RoIs add
// into it), handed out as threads free up (run_tasks; bands under many RoIs cost more than
// others): a task zeroes its band, then adds every RoI's shares that fall in it, RoIs in
// increasing index. An element belongs to one band and receives its additions from one bin of
// each RoI, so it gets the planes' sums in the planes' order, whatever the thread count. Against
// summing in planes and transposing them after (which reads and writes the gradient once more):
// R-FCN's backward at 2 threads (the op alone) 1.06 -> 0.59-0.69 ms (ps_roi_pool), 1.15 -> 0.78-0.89
// ms (ps_roi_align) on an Intel Xeon with AVX-512; in an AVX2 build (-march=haswell) run on AMD
// Zen 5, 0.60-1.11 -> 0.39-0.59 ms and 1.16-1.51 -> 0.68-1.05 ms.
template <typename scalar_t, typename Bins>
void ps_roi_backward_channels_last_in_place(const scalar_t* grad, const int64_t* grad_stride,
                                            const std::vector<int64_t>& batch, int64_t channels_out,
                                            int64_t pooled_height, int64_t pooled_width, at::Tensor& grad_input,
                                            const Bins& bins_of) {
  const int64_t batch_size = grad_input.size(0), height = grad_input.size(2);
  const int64_t stride[4] = {grad_input.stride(0), grad_input.stride(1), grad_input.stride(2), grad_input.stride(3)};
  const int64_t band = std::clamp<int64_t>((int64_t(1) << 20) / (stride[2] * int64_t(sizeof(float))), 1, height);
  const int64_t bands = (height + band - 1) / band;
  float* map = grad_input.mutable_data_ptr<float>();
  const RoisByImage by_image(batch, batch_size);
  std::vector<int64_t> top(batch.size()), bottom(batch.size());
  for (size_t k = 0; k < batch.size(); ++k) {
    ps_roi_rows(bins_of, static_cast<int64_t>(k), pooled_height, &top[k], &bottom[k]);
  }
  run_tasks(batch_size * bands, at::get_num_threads(), [&](int64_t task) {
    const int64_t n = task / bands, row0 = task % bands * band, row1 = std::min(height, row0 + band);
    float* rows = map + n * stride[0] + row0 * stride[2];
    std::fill(rows, rows + (row1 - row0) * stride[2], 0.f);
    for (int64_t j = by_image.offsets[n]; j < by_image.offsets[n + 1]; ++j) {
      const int64_t k = by_image.order[j];
      if (bottom[k] <= row0 || top[k] >= row1) {
        continue;
      }
      for (int64_t ph = 0; ph < pooled_height; ++ph) {
        int64_t r0, r1;
        bins_of.rows(k, ph, &r0, &r1);
        if (r1 <= row0 || r0 >= row1) {
          continue;
        }
        for (int64_t pw = 0; pw < pooled_width; ++pw) {
          for (int64_t c0 = 0; c0 < channels_out; c0 += kLanes) {
            const int64_t group = std::min(kLanes, channels_out - c0);
            with_group_size(group, [&](auto g) {
              const BandPixels<decltype(g)::value> pixels(
                  ps_strided_pixels<decltype(g)::value>(map, stride, n, c0, ph, pw, pooled_height, pooled_width),
                  row0, row1);
              ps_scatter_roi_bin<scalar_t, float>(grad, grad_stride, k, c0, group, ph, pw, pixels, bins_of);
            });
          }
        }
      }
    }
  });
}

// grad_input ([batch_size, C, height, width], acc_t, NCHW or channels_last, uninitialised) = the
// backward driver's result: in place by bands of rows for a channels_last float gradient
// (ps_roi_backward_channels_last_in_place), else summed through the scratch in NCHW planes,
// a channels_last gradient transposed after. Both layouts get the same sums, bit for bit. Over
// NCHW planes the scratch driver stays: with the planes read and written in place instead, R-FCN's
// backward at 2 threads took, with gathers and scatters on an Intel Xeon with AVX-512, 0.53-0.60
// ms against 0.48-0.50 ms (ps_roi_pool); with StridedPixels on AMD Zen 5, as long for ps_roi_pool
// and 0.43-0.45 ms against 0.31-0.35 ms for ps_roi_align.
template <typename scalar_t, typename acc_t, typename Bins>
void ps_roi_backward_into(const at::Tensor& grad, const std::vector<int64_t>& batch, int64_t channels_out,
                          int64_t pooled_height, int64_t pooled_width, at::Tensor& grad_input, const Bins& bins_of) {
  const int64_t batch_size = grad_input.size(0), channels = grad_input.size(1);
  const int64_t height = grad_input.size(2), width = grad_input.size(3), plane = height * width;
  const int64_t grad_stride[4] = {grad.stride(0), grad.stride(1), grad.stride(2), grad.stride(3)};
  if constexpr (std::is_same_v<acc_t, float>) {
    // use_channels_last: a map with one pixel (or one channel) is contiguous in both formats and
    // goes to the planes; the band driver's row blocks are rows of [H, W, C] pixels.
    if (use_channels_last(grad_input) && grad_input.numel() > 0) {
      ps_roi_backward_channels_last_in_place<scalar_t>(grad.const_data_ptr<scalar_t>(), grad_stride, batch,
                                                       channels_out, pooled_height, pooled_width, grad_input, bins_of);
      return;
    }
  }
  const bool transpose = !grad_input.is_contiguous();
  at::Tensor planes = transpose ? at::empty(grad_input.sizes(), grad_input.options()) : grad_input;
  ps_roi_backward_driver<scalar_t, acc_t>(grad.const_data_ptr<scalar_t>(), grad_stride, batch, batch_size,
                                          channels_out, pooled_height, pooled_width, height, width,
                                          planes.mutable_data_ptr<acc_t>(), bins_of);
  if (transpose) {
    transpose_map_layout(planes.const_data_ptr<acc_t>(), grad_input.mutable_data_ptr<acc_t>(), batch_size,
                         channels, plane, /*to_pixels=*/true);
  }
}

// ---- the ops' entry points ------------------------------------------------------------------------
// What ps_roi_align.cpp and ps_roi_pool.cpp share around the drivers. make_bins(acc_t{}, rois, K)
// returns the op's Bins for the RoIs (rois: [K, 5] contiguous, of the input's dtype) in the
// accumulation type acc_t of that dtype.

// The forward: out [K, C_out, PH, PW] in the input's memory format, of its dtype.
template <typename MakeBins>
at::Tensor ps_roi_forward_op(const char* op, const at::Tensor& input, const at::Tensor& rois_in, double spatial_scale,
                             int64_t pooled_height, int64_t pooled_width, MakeBins make_bins) {
  const int64_t channels_out = check_ps_roi_args(op, input, rois_in, spatial_scale, pooled_height, pooled_width);
  const auto format = memory_format_for(use_channels_last(input));
  const at::Tensor rois = rois_in.contiguous();
  const int64_t num_rois = rois.size(0);
  at::Tensor out =
      at::empty({num_rois, channels_out, pooled_height, pooled_width}, input.options().memory_format(format));
  if (num_rois == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "ps_roi_forward_op", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const std::vector<int64_t> batch = ps_roi_batch_indices<scalar_t>(op, rois, input.size(0));
    if (out.numel() == 0) {
      return;
    }
    ps_roi_forward<scalar_t, acc_t>(input, batch, channels_out, pooled_height, pooled_width, out,
                                    make_bins(acc_t{}, rois.const_data_ptr<scalar_t>(), num_rois));
  });
  return out;
}

// The backward: grad_input [batch_size, channels, height, width] in the requested memory format,
// of grad's dtype (summed in acc_t).
template <typename MakeBins>
at::Tensor ps_roi_backward_op(const char* op, const at::Tensor& grad, const at::Tensor& rois_in, double spatial_scale,
                              int64_t pooled_height, int64_t pooled_width, int64_t batch_size, int64_t channels,
                              int64_t height, int64_t width, bool channels_last, MakeBins make_bins) {
  const int64_t channels_out = check_ps_roi_backward_args(op, grad, rois_in, spatial_scale, pooled_height,
                                                          pooled_width, batch_size, channels, height, width);
  const auto format = memory_format_for(channels_last);
  const at::ScalarType dtype = grad.scalar_type();
  const at::ScalarType acc_dtype = at::toOpMathType(dtype);
  at::Tensor grad_input =
      at::empty({batch_size, channels, height, width}, grad.options().dtype(acc_dtype).memory_format(format));
  const at::Tensor rois = rois_in.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "ps_roi_backward_op", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    if (rois.size(0) == 0 || grad_input.numel() == 0) {
      zero_streaming(grad_input.mutable_data_ptr<acc_t>(), grad_input.numel());
      return;
    }
    const std::vector<int64_t> batch = ps_roi_batch_indices<scalar_t>(op, rois, batch_size);
    ps_roi_backward_into<scalar_t, acc_t>(grad, batch, channels_out, pooled_height, pooled_width, grad_input,
                                          make_bins(acc_t{}, rois.const_data_ptr<scalar_t>(), rois.size(0)));
  });
  return acc_dtype != dtype ? grad_input.to(dtype) : grad_input;
}

}  // namespace cpu
}  // namespace roiops
