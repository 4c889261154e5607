// RoIPool (Girshick, Fast R-CNN) on the CPU: the max over each quantized bin, and its backward,
// which routes each bin's gradient to the pixel that was the max (argmax).
//
// The bins of every RoI are computed once (common/roi_pool_bin.h); the forward works on blocks of
// channels (one 64-byte line per pixel) copied into a small scratch, NCHW and channels_last alike
// (roi_pool_forward_blocks explains why), with the layout helpers of vectorized_layout.h. The
// backward partitions the input gradient by (image, channel block): one writer per element and a
// fixed order, so the result does not depend on the thread count.
//
// Ties go to the first pixel in row-major order. A NaN in a bin wins (the output is NaN, as
// torch.max gives), unlike torchvision, which skips NaNs. An empty bin (outside the map, or a box
// with a NaN coordinate) gives 0 with argmax -1 and no gradient.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <type_traits>
#include <tuple>
#include <vector>

#include "common/box_geometry.h"
#include "common/checks.h"
#include "common/memory_format.h"
#include "common/roi_pool_bin.h"
#include "cpu/vectorized_layout.h"

namespace roiops {
namespace cpu {
namespace {

struct PoolRois {
  std::vector<int64_t> batch;     // [K]
  std::vector<PoolBin> bins;      // [K * PH * PW]
  std::vector<int64_t> offsets;   // RoIs of image n: order[offsets[n] .. offsets[n + 1])
  std::vector<int64_t> order;
};

template <typename scalar_t>
PoolRois build_pool_rois(const char* op, const at::Tensor& rois, double spatial_scale, int64_t batch_size,
                         int64_t pooled_height, int64_t pooled_width, int64_t height, int64_t width) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t num_rois = rois.size(0);
  const int64_t bins = pooled_height * pooled_width;
  const scalar_t* r = rois.const_data_ptr<scalar_t>();
  PoolRois p;
  p.batch.assign(num_rois, 0);
  p.bins.resize(num_rois * bins);
  const acc_t scale = static_cast<acc_t>(spatial_scale);
  for (int64_t k = 0; k < num_rois; ++k) {
    const scalar_t* roi = r + 5 * k;
    const acc_t b = static_cast<acc_t>(roi[0]);
    TORCH_CHECK_VALUE(is_batch_index(b, batch_size),
                      op, ": rois[", k, ", 0] (the batch index) must be an integer in [0, ", batch_size,
                      "), got ", static_cast<double>(b));
    p.batch[k] = static_cast<int64_t>(b);
    for (int64_t ph = 0; ph < pooled_height; ++ph) {
      for (int64_t pw = 0; pw < pooled_width; ++pw) {
        p.bins[k * bins + ph * pooled_width + pw] =
            roi_pool_bin(static_cast<acc_t>(roi[1]), static_cast<acc_t>(roi[2]), static_cast<acc_t>(roi[3]),
                         static_cast<acc_t>(roi[4]), scale, ph, pw, pooled_height, pooled_width, height, width);
      }
    }
  }
  p.offsets.assign(batch_size + 1, 0);
  for (int64_t k = 0; k < num_rois; ++k) {
    ++p.offsets[p.batch[k] + 1];
  }
  for (int64_t n = 0; n < batch_size; ++n) {
    p.offsets[n + 1] += p.offsets[n];
  }
  p.order.resize(num_rois);
  std::vector<int64_t> fill(p.offsets.begin(), p.offsets.end() - 1);
  for (int64_t k = 0; k < num_rois; ++k) {
    p.order[fill[p.batch[k]]++] = k;
  }
  return p;
}

// ---- forward: blocks of channels, several bins in flight --------------------------------------
//
// Tasks are (image, block of kLanes channels, run of that image's RoIs in spatial order). A task
// copies the rows its RoIs read of its channels into a scratch [H, W, kLanes] (from either memory
// format) and reads a pixel there as one vector of kLanes values (one cache line). Working
// per block keeps what a task touches small (a 200 x 304 map is 3.9 MB per block of 16 floats),
// so the ~10 overlapping RoIs that read each pixel find it in cache. The max over a bin is a chain
// of compare-and-selects, one vector per pixel; the bins of a bin row (same pixel rows) run side
// by side so that several independent chains hide each other's latency.

// kLanes values of acc_t: one 64-byte line, as a GCC/Clang vector (AVX-512: one register).
template <typename acc_t>
struct PoolLanes {
  static constexpr int kLanes = static_cast<int>(64 / sizeof(acc_t));
  using index_t = std::conditional_t<sizeof(acc_t) == 8, int64_t, int32_t>;  // same width as acc_t
  typedef acc_t value_vec __attribute__((vector_size(64)));
  typedef index_t index_vec __attribute__((vector_size(64)));
};

// The kLanes channels of one pixel as acc_t; lanes >= nc (a short last block) read as 0.
template <typename acc_t, typename in_t, bool kFull>
inline void load_lanes(const in_t* p, int nc, typename PoolLanes<acc_t>::value_vec& v) {
  // (An out-parameter, not a return value: returning a 64-byte vector is an ABI question the
  // compiler warns about where AVX-512 is not enabled.)
  if constexpr (kFull && std::is_same_v<in_t, acc_t>) {
    std::memcpy(&v, p, sizeof(v));
  } else {
    for (int l = 0; l < PoolLanes<acc_t>::kLanes; ++l) {
      v[l] = (kFull || l < nc) ? static_cast<acc_t>(p[l]) : acc_t(0);
    }
  }
}

// Pixels [q_begin, q_end) of nc <= kLanes channels of a channels_last image (src points at the
// first channel of pixel 0; pixel stride `channels`) into dst = [plane][kLanes] in acc_t, lanes
// >= nc 0. One line per pixel at a stride of C values: the hardware prefetcher follows that
// stride, and a software prefetch well ahead covers the DRAM latency of each separate line.
template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void copy_channels_last_rows(const scalar_t* src, int64_t channels, int nc, int64_t q_begin, int64_t q_end,
                             acc_t* dst) {
  constexpr int kLanes = PoolLanes<acc_t>::kLanes;
  constexpr int64_t kAhead = 64;
  for (int64_t q = q_begin; q < q_end; ++q) {
    if (q + kAhead < q_end) {
      __builtin_prefetch(src + (q + kAhead) * channels);
    }
    typename PoolLanes<acc_t>::value_vec v;
    if (nc == kLanes) {
      load_lanes<acc_t, scalar_t, true>(src + q * channels, nc, v);
    } else {
      load_lanes<acc_t, scalar_t, false>(src + q * channels, nc, v);
    }
    std::memcpy(dst + q * kLanes, &v, sizeof(v));
  }
}

// Max and first (row-major) argmax of G bins of one bin row: pixel rows [h0, h1), columns
// [ws[g], we[g]) (non-empty), of a block scratch [H][W][kLanes].
// The bins step through their columns together, so G compare-and-select chains are in flight;
// the columns all bins have are one unbranched loop, the last column or two of the wider bins a
// short tail.
template <int G, typename acc_t>
inline void pool_bin_row(const acc_t* image, int64_t width, int64_t h0, int64_t h1, const int64_t* ws,
                         const int64_t* we, typename PoolLanes<acc_t>::value_vec* best,
                         typename PoolLanes<acc_t>::index_vec* best_at) {
  using Lanes = PoolLanes<acc_t>;
  using index_t = typename Lanes::index_t;
  using value_vec = typename Lanes::value_vec;
  using index_vec = typename Lanes::index_vec;
  constexpr int kLanes = Lanes::kLanes;
  int64_t common = we[0] - ws[0], span = common;
  for (int g = 1; g < G; ++g) {
    common = std::min(common, we[g] - ws[g]);
    span = std::max(span, we[g] - ws[g]);
  }
  value_vec bv[G];
  index_vec bi[G];
  for (int g = 0; g < G; ++g) {
    const int64_t at = h0 * width + ws[g];
    load_lanes<acc_t, acc_t, true>(image + at * kLanes, kLanes, bv[g]);
    bi[g] = index_vec{} + static_cast<index_t>(at);  // broadcast
  }
  // v > best, or v the first NaN (the running best is kept once it is NaN). Ties keep the first.
  auto step = [&](int g, const acc_t* px, const index_vec& at) {
    value_vec v;
    load_lanes<acc_t, acc_t, true>(px, kLanes, v);
    const index_vec take = (bv[g] == bv[g]) & ~(v <= bv[g]);
    bv[g] = take ? v : bv[g];
    bi[g] = take ? at : bi[g];
  };
  for (int64_t h = h0; h < h1; ++h) {
    const acc_t* row[G];
    index_vec at[G];
    for (int g = 0; g < G; ++g) {
      row[g] = image + (h * width + ws[g]) * kLanes;
      at[g] = index_vec{} + static_cast<index_t>(h * width + ws[g]);
    }
    for (int64_t i = 0; i < common; ++i) {
      const int64_t offset = i * kLanes;
#pragma GCC unroll 8
      for (int g = 0; g < G; ++g) {
        step(g, row[g] + offset, at[g]);
        at[g] += 1;
      }
    }
    for (int64_t i = common; i < span; ++i) {
      for (int g = 0; g < G; ++g) {
        if (ws[g] + i < we[g]) {
          step(g, row[g] + i * kLanes, at[g]);
          at[g] += 1;
        }
      }
    }
  }
  for (int g = 0; g < G; ++g) {
    best[g] = bv[g];
    best_at[g] = bi[g];
  }
}

// Writes one bin's kLanes results (value and argmax, channels contiguous: the channels_last
// output) with streaming stores, when the types and alignment allow it: the lines are written
// whole and not read again soon, so reading them in first (a write-allocate) only costs memory
// traffic. Returns false when it did not write (the caller then stores element by element).
template <typename acc_t, typename scalar_t>
inline bool stream_bin_lanes(const typename PoolLanes<acc_t>::value_vec& value,
                             const typename PoolLanes<acc_t>::index_vec& index, bool empty, scalar_t* out,
                             int64_t* argmax) {
#if defined(__AVX512F__)
  const bool aligned = (reinterpret_cast<uintptr_t>(out) % 64 == 0) && (reinterpret_cast<uintptr_t>(argmax) % 64 == 0);
  if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<acc_t, float>) {
    if (aligned) {
      // int32 lanes to int64 with vector conversions (GCC 12's intrinsics for this warn falsely).
      typedef int32_t half_index __attribute__((vector_size(32)));
      typedef int64_t wide_index __attribute__((vector_size(64)));
      half_index lo32, hi32;
      std::memcpy(&lo32, &index, sizeof(lo32));
      std::memcpy(&hi32, reinterpret_cast<const char*>(&index) + sizeof(lo32), sizeof(hi32));
      const wide_index none = wide_index{} - 1;
      const wide_index lo = empty ? none : __builtin_convertvector(lo32, wide_index);
      const wide_index hi = empty ? none : __builtin_convertvector(hi32, wide_index);
      _mm512_stream_ps(out, empty ? _mm512_setzero_ps() : reinterpret_cast<const __m512&>(value));
      _mm512_stream_si512(reinterpret_cast<__m512i*>(argmax), reinterpret_cast<const __m512i&>(lo));
      _mm512_stream_si512(reinterpret_cast<__m512i*>(argmax + 8), reinterpret_cast<const __m512i&>(hi));
      return true;
    }
  } else if constexpr (std::is_same_v<scalar_t, double> && std::is_same_v<acc_t, double>) {
    if (aligned) {
      _mm512_stream_pd(out, empty ? _mm512_setzero_pd() : reinterpret_cast<const __m512d&>(value));
      _mm512_stream_si512(reinterpret_cast<__m512i*>(argmax),
                          empty ? _mm512_set1_epi64(-1) : reinterpret_cast<const __m512i&>(index));
      return true;
    }
  }
#endif
  (void)value, (void)index, (void)empty, (void)out, (void)argmax;
  return false;
}

// Pools one RoI (its bins: bins_of_roi) from a block scratch [H][W][kLanes]: element (c, bin) of
// its output, c < nc, goes to out[c * out_channel_stride + bin * out_bin_stride] (argmax alike).
template <typename acc_t, typename scalar_t>
void pool_roi_block(const PoolBin* bins_of_roi, const acc_t* image, int64_t width, int nc, int64_t pooled_height,
                    int64_t pooled_width, scalar_t* out, int64_t* argmax, int64_t out_channel_stride,
                    int64_t out_bin_stride) {
  using Lanes = PoolLanes<acc_t>;
  constexpr int kGroup = 8;
  typename Lanes::value_vec best[kGroup];
  typename Lanes::index_vec best_at[kGroup];
  int64_t ws[kGroup], we[kGroup];
  for (int64_t ph = 0; ph < pooled_height; ++ph) {
    const PoolBin* row = bins_of_roi + ph * pooled_width;
    for (int64_t pw0 = 0; pw0 < pooled_width; pw0 += kGroup) {
      const int g_count = static_cast<int>(std::min<int64_t>(kGroup, pooled_width - pw0));
      const int64_t h0 = row[pw0].h_start, h1 = row[pw0].h_end;  // a bin row shares its pixel rows
      bool any = false;
      for (int g = 0; g < g_count; ++g) {
        const PoolBin& bin = row[pw0 + g];
        // An empty bin borrows a valid pixel and is written as empty below.
        ws[g] = bin.empty() ? 0 : bin.w_start;
        we[g] = bin.empty() ? 1 : bin.w_end;
        any = any || !bin.empty();
      }
      if (any) {
        switch (g_count) {
#define ROIOPS_POOL_GROUP(G)                                                                                   \
  case G:                                                                                                    \
    pool_bin_row<G, acc_t>(image, width, h0, h1, ws, we, best, best_at);                                     \
    break;
          ROIOPS_POOL_GROUP(1)
          ROIOPS_POOL_GROUP(2)
          ROIOPS_POOL_GROUP(3)
          ROIOPS_POOL_GROUP(4)
          ROIOPS_POOL_GROUP(5)
          ROIOPS_POOL_GROUP(6)
          ROIOPS_POOL_GROUP(7)
          ROIOPS_POOL_GROUP(8)
#undef ROIOPS_POOL_GROUP
        }
      }
      for (int g = 0; g < g_count; ++g) {
        const bool empty = row[pw0 + g].empty();
        const int64_t b = ph * pooled_width + pw0 + g;
        if (out_channel_stride == 1 && nc == Lanes::kLanes &&
            stream_bin_lanes<acc_t>(best[g], best_at[g], empty, out + b * out_bin_stride, argmax + b * out_bin_stride)) {
          continue;
        }
        for (int l = 0; l < nc; ++l) {
          out[l * out_channel_stride + b * out_bin_stride] = empty ? scalar_t(0) : static_cast<scalar_t>(best[g][l]);
          argmax[l * out_channel_stride + b * out_bin_stride] = empty ? -1 : static_cast<int64_t>(best_at[g][l]);
        }
      }
    }
  }
}

// input: [N, C, H, W], NCHW or channels_last in memory; out / argmax in the same format.
template <typename scalar_t>
void roi_pool_forward_blocks(const PoolRois& p, const std::vector<int64_t>& visit, const scalar_t* input,
                             bool channels_last, int64_t batch_size, int64_t channels, int64_t height, int64_t width,
                             int64_t pooled_height, int64_t pooled_width, scalar_t* out, int64_t* argmax) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int kLanes = PoolLanes<acc_t>::kLanes;
  const int64_t bins = pooled_height * pooled_width;
  const int64_t plane = height * width;
  const int64_t blocks = (channels + kLanes - 1) / kLanes;
  // RoIs of an image are split into runs when (image, block) pairs are too few to share out.
  const int64_t pairs = batch_size * blocks;
  const int64_t wanted = 4 * static_cast<int64_t>(at::get_num_threads());
  const int64_t runs = pairs >= wanted ? 1 : (wanted + pairs - 1) / pairs;
  at::parallel_for(0, pairs * runs, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> scratch;
    std::vector<scalar_t> roi_out(kLanes * bins);
    std::vector<int64_t> roi_argmax(kLanes * bins);
    std::vector<char> rows;
    for (int64_t task = begin; task < end; ++task) {
      // The block varies slowest, so that parallel_for's contiguous chunks cover every image.
      const int64_t c0 = (task / (batch_size * runs)) * kLanes;
      const int64_t n = (task / runs) % batch_size;
      const int64_t run = task % runs;
      const int nc = static_cast<int>(std::min<int64_t>(kLanes, channels - c0));
      // visit is sorted by image: image n's RoIs are visit[p.offsets[n] .. p.offsets[n + 1]).
      const int64_t first = p.offsets[n], count = p.offsets[n + 1] - p.offsets[n];
      const int64_t j0 = first + count * run / runs, j1 = first + count * (run + 1) / runs;
      if (j0 == j1) {
        continue;
      }
      // The map rows these RoIs read (a bin row shares its pixel rows).
      rows.assign(height, 0);
      for (int64_t j = j0; j < j1; ++j) {
        const PoolBin* roi_bins = p.bins.data() + visit[j] * bins;
        for (int64_t ph = 0; ph < pooled_height; ++ph) {
          const PoolBin& bin = roi_bins[ph * pooled_width];
          std::fill(rows.begin() + bin.h_start, rows.begin() + std::max(bin.h_start, bin.h_end), 1);
        }
      }
      // Copy those rows of the block's channels into [H][W][kLanes] in acc_t; the lanes of a short
      // last block are 0.
      scratch.resize(plane * kLanes);
      for_each_run(rows, [&](int64_t r, int64_t e) {
        if (channels_last) {
          copy_channels_last_rows(input + n * plane * channels + c0, channels, nc, r * width, e * width,
                                  scratch.data());
        } else {
          planes_to_block(input + (n * channels + c0) * plane, plane, r * width, e * width, nc, int64_t{kLanes},
                          scratch.data());
        }
      });
      const acc_t* image = scratch.data();
      for (int64_t j = j0; j < j1; ++j) {
        const int64_t k = visit[j];
        const PoolBin* roi_bins = p.bins.data() + k * bins;
        if (channels_last) {
          // Element (c, bin) at k * C * bins + bin * C + c: the lanes are contiguous.
          pool_roi_block<acc_t>(roi_bins, image, width, nc, pooled_height, pooled_width,
                                out + k * channels * bins + c0, argmax + k * channels * bins + c0, 1, channels);
        } else {
          // Element (c, bin) at (k * C + c) * bins + bin: the RoI's block is one contiguous run,
          // assembled here and copied out front to back.
          pool_roi_block<acc_t>(roi_bins, image, width, nc, pooled_height, pooled_width, roi_out.data(),
                                roi_argmax.data(), bins, 1);
          stream_copy(roi_out.data(), nc * bins, out + (k * channels + c0) * bins);
          stream_copy(roi_argmax.data(), nc * bins, argmax + (k * channels + c0) * bins);
        }
      }
    }
    streaming_stores_done();
  });
}

// RoIs ordered by image, then along a Z-order (Morton) curve of their centres in 8-pixel cells: a
// visiting order in which consecutive RoIs lie close together in both directions and overlap, so a
// thread finds much of a RoI's region in cache. Any order gives the same result.
inline std::vector<int64_t> spatial_order(const PoolRois& p, int64_t bins) {
  auto code = [&](int64_t k) -> uint64_t {
    const PoolBin& first = p.bins[k * bins];
    const PoolBin& last = p.bins[k * bins + bins - 1];
    const uint64_t y = static_cast<uint64_t>(std::max<int64_t>(0, (first.h_start + last.h_end) / 2)) / 8;
    const uint64_t x = static_cast<uint64_t>(std::max<int64_t>(0, (first.w_start + last.w_end) / 2)) / 8;
    uint64_t m = 0;
    for (int bit = 0; bit < 28; ++bit) {
      m |= ((y >> bit) & 1u) << (2 * bit + 1);
      m |= ((x >> bit) & 1u) << (2 * bit);
    }
    return m;
  };
  std::vector<std::tuple<int64_t, uint64_t, int64_t>> keys(p.batch.size());
  for (size_t k = 0; k < keys.size(); ++k) {
    keys[k] = std::make_tuple(p.batch[k], code(static_cast<int64_t>(k)), static_cast<int64_t>(k));
  }
  std::sort(keys.begin(), keys.end());
  std::vector<int64_t> visit(keys.size());
  for (size_t j = 0; j < keys.size(); ++j) {
    visit[j] = std::get<2>(keys[j]);
  }
  return visit;
}

std::tuple<at::Tensor, at::Tensor> roi_pool_forward_cpu(const at::Tensor& input_in, const at::Tensor& rois_in,
                                                        double spatial_scale, int64_t pooled_height,
                                                        int64_t pooled_width) {
  check_roi_pool_args(input_in, rois_in, spatial_scale, pooled_height, pooled_width);
  const bool channels_last = use_channels_last(input_in);
  const auto format = memory_format_for(channels_last);
  const at::Tensor input = input_in.contiguous(format);
  const at::Tensor rois = rois_in.contiguous();
  const int64_t batch_size = input.size(0), channels = input.size(1), height = input.size(2),
                width = input.size(3), num_rois = rois.size(0);
  TORCH_CHECK_VALUE(height * width < (int64_t(1) << 31), "roi_pool: input maps over 2^31 pixels are not supported");
  at::Tensor out = at::empty({num_rois, channels, pooled_height, pooled_width}, input.options().memory_format(format));
  at::Tensor argmax = at::empty(out.sizes(), input.options().dtype(at::kLong).memory_format(format));
  if (num_rois == 0) {
    return {out, argmax};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_pool_forward_cpu", [&] {
    const PoolRois p = build_pool_rois<scalar_t>("roi_pool", rois, spatial_scale, batch_size, pooled_height,
                                                 pooled_width, height, width);
    if (out.numel() == 0) {
      return;
    }
    const int64_t bins = pooled_height * pooled_width;
    const std::vector<int64_t> visit = spatial_order(p, bins);
    roi_pool_forward_blocks<scalar_t>(p, visit, input.const_data_ptr<scalar_t>(), channels_last, batch_size, channels,
                                      height, width, pooled_height, pooled_width, out.mutable_data_ptr<scalar_t>(),
                                      argmax.mutable_data_ptr<int64_t>());
  });
  return {out, argmax};
}

at::Tensor roi_pool_backward_cpu(const at::Tensor& grad_in, const at::Tensor& rois_in, const at::Tensor& argmax_in,
                                 int64_t batch_size, int64_t channels, int64_t height, int64_t width,
                                 bool channels_last) {
  check_roi_pool_backward_args(grad_in, rois_in, argmax_in, channels);
  const int64_t num_rois = rois_in.size(0);
  const auto format = memory_format_for(channels_last);
  const at::ScalarType dtype = grad_in.scalar_type();
  const bool half = dtype == at::kHalf || dtype == at::kBFloat16;
  // at::empty + zero_streaming, not at::zeros: at::zeros ignores the memory format.
  at::Tensor grad_input = at::empty({batch_size, channels, height, width},
                                    grad_in.options().dtype(half ? at::kFloat : dtype).memory_format(format));
  AT_DISPATCH_FLOATING_TYPES(grad_input.scalar_type(), "roi_pool_backward_zero_cpu", [&] {
    zero_streaming(grad_input.mutable_data_ptr<scalar_t>(), grad_input.numel());
  });
  if (num_rois == 0 || grad_in.numel() == 0) {
    return half ? grad_input.to(dtype) : grad_input;
  }
  const at::Tensor grad = grad_in.contiguous(format);
  const at::Tensor argmax = argmax_in.contiguous(format);
  const at::Tensor rois = rois_in.contiguous();
  const int64_t bins = grad.size(2) * grad.size(3);
  const int64_t plane_size = height * width;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "roi_pool_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    // Only the batch index and the grouping are needed; the bins are encoded in argmax.
    const PoolRois p = build_pool_rois<scalar_t>("roi_pool_backward", rois, 1.0, batch_size, 1, 1, height, width);
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const int64_t* am = argmax.const_data_ptr<int64_t>();
    acc_t* gi = grad_input.mutable_data_ptr<acc_t>();
    std::atomic<bool> bad_argmax{false};
    if (channels_last) {
      constexpr int64_t kBlock = 64;
      const int64_t blocks = (channels + kBlock - 1) / kBlock;
      at::parallel_for(0, batch_size * blocks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t task = begin; task < end; ++task) {
          const int64_t n = task / blocks, c0 = (task % blocks) * kBlock;
          const int64_t c1 = std::min(channels, c0 + kBlock);
          acc_t* image = gi + n * plane_size * channels;
          for (int64_t j = p.offsets[n]; j < p.offsets[n + 1]; ++j) {
            const int64_t k = p.order[j];
            for (int64_t b = 0; b < bins; ++b) {
              const int64_t base = (k * bins + b) * channels;
              for (int64_t c = c0; c < c1; ++c) {
                const int64_t a = am[base + c];
                if (a < 0) continue;
                if (a >= plane_size) { bad_argmax = true; continue; }
                image[a * channels + c] += static_cast<acc_t>(g[base + c]);
              }
            }
          }
        }
      });
    } else {
      at::parallel_for(0, batch_size * channels, 1, [&](int64_t begin, int64_t end) {
        for (int64_t task = begin; task < end; ++task) {
          const int64_t n = task / channels, c = task % channels;
          acc_t* plane = gi + task * plane_size;
          for (int64_t j = p.offsets[n]; j < p.offsets[n + 1]; ++j) {
            const int64_t base = (p.order[j] * channels + c) * bins;
            for (int64_t b = 0; b < bins; ++b) {
              const int64_t a = am[base + b];
              if (a < 0) continue;
              if (a >= plane_size) { bad_argmax = true; continue; }
              plane[a] += static_cast<acc_t>(g[base + b]);
            }
          }
        }
      });
    }
    TORCH_CHECK_VALUE(!bad_argmax.load(), "roi_pool_backward: argmax holds an index >= height * width = ",
                      plane_size);
  });
  return half ? grad_input.to(dtype) : grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CPU, m) {
  m.impl("roi_pool", &roi_pool_forward_cpu);
  m.impl("roi_pool_backward", &roi_pool_backward_cpu);
}

}  // namespace cpu
}  // namespace roiops
