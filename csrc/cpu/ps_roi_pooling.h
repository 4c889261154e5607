// The CPU drivers of the position-sensitive RoI ops (ps_roi_align.cpp, ps_roi_pool.cpp). Both pool
// every bin as a weighted sum of map pixels of one channel per output channel
// (common/ps_roi_math.h, ps_input_channel); they differ only in which pixels, with which weights
// (bilinear samples or a quantized rectangle). The op supplies that as a BinTaps per (RoI, bin),
// computed once and reused for every output channel; the drivers here do the sums.
//
// Maps are read and written through their strides: NCHW and channels_last alike, no copies.
// Both directions work per (image, bin): a bin touches only its own C_out input channels. In the
// backward a task owns those channels, so each gradient element has one writer and a fixed order
// of additions (RoIs in increasing index), whatever the thread count.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/box_geometry.h"
#include "cpu/vectorized_layout.h"

namespace roiops {
namespace cpu {

// Element strides of a 4-d tensor [N, C, H, W].
struct MapStrides {
  int64_t n, c, h, w;
};

inline MapStrides map_strides(const at::Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

// One bin of one RoI: pooled value = (sum_j weight[j] * map[offset[j]]) * scale / divisor, with
// offset[j] an element offset inside one channel plane (row * stride_h + column * stride_w).
template <typename acc_t>
struct BinTaps {
  std::vector<int64_t> offset;
  std::vector<acc_t> weight;
  acc_t scale = 1;
  acc_t divisor = 1;  // PSRoIPool divides by the bin area, as torchvision does, for the same rounding
  void clear() {
    offset.clear();
    weight.clear();
    scale = acc_t(1);
    divisor = acc_t(1);
  }
  void add(int64_t o, acc_t w) {
    offset.push_back(o);
    weight.push_back(w);
  }
  // Room for n taps, to be filled by index.
  void resize(size_t n) {
    offset.resize(n);
    weight.resize(n);
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

// The forward of G output channels of one bin: G planes at a stride of plane_stride elements,
// o[g * out_stride] = (sum_t weight[t] * plane_g[offset[t]]) * scale / divisor, summed in t order.
// Not auto-vectorized: GCC turns the loop over taps into gathers, which are slower here than scalar
// loads (measured 3x on Zen 4); the G independent sums are the parallelism.
template <int G, typename scalar_t, typename acc_t>
__attribute__((optimize("no-tree-vectorize"))) inline void sum_channels(const scalar_t* planes, int64_t plane_stride, const int64_t* offset, const acc_t* weight,
                         int64_t size, const BinTaps<acc_t>& taps, scalar_t* o, int64_t out_stride) {
  acc_t sum[G];
  for (int g = 0; g < G; ++g) {
    sum[g] = acc_t(0);
  }
  for (int64_t t = 0; t < size; ++t) {
    const acc_t w = weight[t];
    const scalar_t* p = planes + offset[t];
#pragma GCC unroll 16  // >= kMaxChains: every group fully unrolled, its sums in registers
    for (int g = 0; g < G; ++g) {
      sum[g] += w * static_cast<acc_t>(p[g * plane_stride]);
    }
  }
  // x / 1 is x: PSRoIAlign (divisor 1) skips G divisions, with the same results.
  if (taps.divisor == acc_t(1)) {
    for (int g = 0; g < G; ++g) {
      o[g * out_stride] = static_cast<scalar_t>(sum[g] * taps.scale);
    }
  } else {
    for (int g = 0; g < G; ++g) {
      o[g * out_stride] = static_cast<scalar_t>(sum[g] * taps.scale / taps.divisor);
    }
  }
}

constexpr int64_t kMaxChains = 16;

// sum_channels for a group of 1 .. kMaxChains channels.
template <typename scalar_t, typename acc_t>
inline void sum_channel_group(int64_t group, const scalar_t* planes, int64_t plane_stride, const int64_t* offset,
                              const acc_t* weight, int64_t size, const BinTaps<acc_t>& taps, scalar_t* o,
                              int64_t out_stride) {
  switch (group) {
#define ROIOPS_PS_GROUP(G)                                                           \
  case G:                                                                            \
    sum_channels<G>(planes, plane_stride, offset, weight, size, taps, o, out_stride); \
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

// out[k, c_out, ph, pw] (strides os) from input (strides in) for every RoI k.
// make_bin(k, ph, pw, stride_h, stride_w, BinTaps&) fills the taps of a bin.
// Tasks are (image, bin, run of that image's RoIs): a bin reads only its C_out channel planes
// (10 planes of 50 x 76 floats, 150 KB, for R-FCN), which stay in cache while every RoI of the
// run reads them. Visiting RoI by RoI instead reads all C channels per RoI and misses the cache on
// nearly every sample.
template <typename scalar_t, typename acc_t, typename MakeBin>
void ps_roi_forward_driver(const scalar_t* input, const MapStrides& in, const std::vector<int64_t>& batch,
                           int64_t batch_size, int64_t channels_out, int64_t pooled_height, int64_t pooled_width,
                           scalar_t* out, const MapStrides& os, const MakeBin& make_bin) {
  const int64_t bins = pooled_height * pooled_width;
  const int64_t in_cstride = bins * in.c;  // from c_out to c_out + 1 at a fixed bin
  const RoisByImage by_image(batch, batch_size);
  const int64_t groups = (channels_out + kMaxChains - 1) / kMaxChains;
  // Runs split an image's RoIs when (image, bin) pairs are too few to share out.
  const int64_t pairs = batch_size * bins;
  const int64_t wanted = 4 * static_cast<int64_t>(at::get_num_threads());
  const int64_t runs = pairs >= wanted ? 1 : (wanted + pairs - 1) / pairs;
  at::parallel_for(0, pairs * runs, 1, [&](int64_t begin, int64_t end) {
    BinTaps<acc_t> taps;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / (bins * runs), bin = (task / runs) % bins, run = task % runs;
      const int64_t ph = bin / pooled_width, pw = bin % pooled_width;
      const int64_t first = by_image.offsets[n], count = by_image.offsets[n + 1] - first;
      const scalar_t* base = input + n * in.n + bin * in.c;
      for (int64_t j = first + count * run / runs; j < first + count * (run + 1) / runs; ++j) {
        const int64_t k = by_image.order[j];
        make_bin(k, ph, pw, in.h, in.w, taps);
        const int64_t* offset = taps.offset.data();
        const acc_t* weight = taps.weight.data();
        const int64_t size = static_cast<int64_t>(taps.offset.size());
        scalar_t* o = out + k * os.n + ph * os.h + pw * os.w;
        // The channels in groups of at most kMaxChains (10 for R-FCN: one group): independent
        // sums (one per channel, each in the taps' order) keep several loads and multiply-adds in
        // flight, and each tap's offset and weight are loaded once per group.
        for (int64_t g = 0; g < groups; ++g) {
          const int64_t c0 = channels_out * g / groups, c1 = channels_out * (g + 1) / groups;
          sum_channel_group(c1 - c0, base + c0 * in_cstride, in_cstride, offset, weight, size, taps,
                            o + c0 * os.c, os.c);
        }
      }
    }
  });
}

// The adjoint of one bin of RoI k for output channels [c_begin, c_end): grad_input planes at a
// stride of gi_cstride elements from base, taps in their order.
template <typename scalar_t, typename acc_t>
inline void scatter_bin(const BinTaps<acc_t>& taps, const scalar_t* g, int64_t g_cstride, int64_t c_begin,
                        int64_t c_end, acc_t* base, int64_t gi_cstride) {
  const int64_t count = static_cast<int64_t>(taps.offset.size());
  const int64_t* offset = taps.offset.data();
  const acc_t* weight = taps.weight.data();
  const bool divide = taps.divisor != acc_t(1);  // x / 1 is x
  for (int64_t c = c_begin; c < c_end; ++c) {
    const acc_t gs = static_cast<acc_t>(g[c * g_cstride]) * taps.scale;
    const acc_t gc = divide ? gs / taps.divisor : gs;
    if (gc == acc_t(0)) {
      continue;
    }
    acc_t* p = base + c * gi_cstride;
    for (int64_t t = 0; t < count; ++t) {
      p[offset[t]] += weight[t] * gc;
    }
  }
}

// grad_input (strides is, [batch_size, C, height, width]) = the adjoint of the forward applied to
// grad (strides gs, [K, C_out, PH, PW]). grad_input is NCHW-contiguous ([batch_size, C, plane]) and
// uninitialised: each task zeroes its own planes first.
// Every element receives its additions in one fixed order (RoIs by increasing index, then the
// bin's taps), so the result does not depend on the thread count.
template <typename scalar_t, typename acc_t, typename MakeBin>
void ps_roi_backward_driver(const scalar_t* grad, const MapStrides& gs, const std::vector<int64_t>& batch,
                            int64_t batch_size, int64_t channels_out, int64_t pooled_height, int64_t pooled_width,
                            acc_t* grad_input, const MapStrides& is, int64_t plane,
                            const MakeBin& make_bin) {
  const int64_t bins = pooled_height * pooled_width;
  const RoisByImage by_image(batch, batch_size);
  const int64_t gi_cstride = bins * is.c;
  at::parallel_for(0, batch_size * bins, 1, [&](int64_t begin, int64_t end) {
    BinTaps<acc_t> taps;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / bins, bin = task % bins;
      const int64_t ph = bin / pooled_width, pw = bin % pooled_width;
      acc_t* base = grad_input + n * is.n + bin * is.c;
      for (int64_t c = 0; c < channels_out; ++c) {
        std::fill(base + c * gi_cstride, base + c * gi_cstride + plane, acc_t(0));
      }
      for (int64_t j = by_image.offsets[n]; j < by_image.offsets[n + 1]; ++j) {
        const int64_t k = by_image.order[j];
        make_bin(k, ph, pw, is.h, is.w, taps);
        if (taps.offset.empty()) {
          continue;
        }
        scatter_bin(taps, grad + k * gs.n + ph * gs.h + pw * gs.w, gs.c, 0, channels_out, base, gi_cstride);
      }
    }
  });
}

// grad_input ([batch_size, C, height, width], acc_t, NCHW or channels_last, uninitialised) = the
// backward driver's result. A channels_last gradient is summed in NCHW planes and then transposed:
// in place, a task of one bin would add into C_out cache lines of every pixel, each line shared by
// 16 bins (16 tasks), and miss the cache on nearly every addition (2.5x slower on R-FCN shapes).
// Both layouts get the same sums, bit for bit.
template <typename scalar_t, typename acc_t, typename MakeBin>
void ps_roi_backward_into(const at::Tensor& grad, const std::vector<int64_t>& batch, int64_t channels_out,
                          int64_t pooled_height, int64_t pooled_width, at::Tensor& grad_input,
                          const MakeBin& make_bin) {
  const int64_t batch_size = grad_input.size(0), channels = grad_input.size(1);
  const int64_t plane = grad_input.size(2) * grad_input.size(3);
  const bool transpose = !grad_input.is_contiguous();
  at::Tensor planes = transpose ? at::empty(grad_input.sizes(), grad_input.options()) : grad_input;
  ps_roi_backward_driver<scalar_t, acc_t>(grad.const_data_ptr<scalar_t>(), map_strides(grad), batch, batch_size,
                                          channels_out, pooled_height, pooled_width,
                                          planes.mutable_data_ptr<acc_t>(), map_strides(planes), plane, make_bin);
  if (!transpose) {
    return;
  }
  constexpr int64_t kPixels = 256;  // pixels per transposing task
  const int64_t tiles = (plane + kPixels - 1) / kPixels;
  const acc_t* src = planes.const_data_ptr<acc_t>();
  acc_t* dst = grad_input.mutable_data_ptr<acc_t>();
  at::parallel_for(0, batch_size * tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / tiles, p0 = (task % tiles) * kPixels;
      planes_to_pixels(src + n * channels * plane, plane, channels, p0, std::min(plane, p0 + kPixels),
                       dst + n * channels * plane);
    }
  });
}

}  // namespace cpu
}  // namespace roiops
