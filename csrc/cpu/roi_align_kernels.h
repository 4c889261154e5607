// CPU RoIAlign kernels shared by roi_align.cpp (one feature map) and multi_scale_roi_align.cpp
// (an FPN pyramid, each RoI pooled from its own level). Only this pair of files includes it.
//
// Plan: the bilinear taps of every RoI (which rows and columns each sample reads, with what
// weight) are computed once per RoI from roi_align_math.h and stored per axis, because the 2-D
// weight of a sample is the product of its y and x weights. The kernels then only multiply and add
// over channels:
// - channels_last: parallel over RoIs; each tap reads 4 contiguous runs of C values and the inner
//   loop over C is vectorized.
// - NCHW: parallel over (level, image, block of 16 float channels); a task copies the map rows its
//   RoIs read of its channel planes into a small channels_last scratch (one cache line per pixel)
//   and runs the same vectorized loops on it, so the planes are read once, front to back, and
//   no full transposed copy of the maps is made.
// Backward kernels partition the gradient of the input by (level, image, channel block): every
// element has one writer and a fixed summation order, so results do not depend on the number of
// threads and no atomics are needed.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <type_traits>
#if defined(__AVX__)
#include <immintrin.h>
#endif
#include <climits>
#include <cstdint>
#include <tuple>
#include <utility>
#include <vector>

#include "common/roi_align_math.h"

namespace roiops {
namespace cpu {

// One sample along one axis, kept only when it lands on the map (else it contributes nothing).
template <typename acc_t>
struct Tap {
  int64_t low, high;    // pixel rows (y taps) or columns (x taps)
  acc_t w_low, w_high;  // interpolation weights
  acc_t slope;          // d(w_high)/d(position), see AxisSample
  acc_t d_lo, d_hi;     // d(position)/d(box x1|y1), d(position)/d(box x2|y2)
};

// The taps of one RoI: bin ph's y taps are ys[y_begin[ph] .. y_begin[ph + 1]), likewise x.
template <typename acc_t>
struct RoiTaps {
  int64_t batch = 0;
  int64_t level = 0;
  acc_t inv_count = 1;
  std::vector<int32_t> y_begin, x_begin;
  std::vector<Tap<acc_t>> ys, xs;
};

// A feature map (one pyramid level) as the kernels see it.
struct LevelShape {
  int64_t height, width;
  double spatial_scale;
};

template <typename acc_t>
void build_axis_taps(const RoiAxis<acc_t>& axis, acc_t spatial_scale, int64_t pooled, int64_t size,
                     std::vector<int32_t>& begin, std::vector<Tap<acc_t>>& taps) {
  begin.assign(pooled + 1, 0);
  taps.clear();
  for (int64_t p = 0; p < pooled; ++p) {
    begin[p] = static_cast<int32_t>(taps.size());
    int64_t first, last;
    sample_index_range(axis, p, size, &first, &last);
    for (int64_t i = first; i < last; ++i) {
      const AxisSample<acc_t> s = bilinear_axis(sample_position(axis, p, i), size);
      if (s.w_low == acc_t(0) && s.w_high == acc_t(0)) {
        continue;  // outside [-1, size]
      }
      Tap<acc_t> t;
      t.low = s.low;
      t.high = s.high;
      t.w_low = s.w_low;
      t.w_high = s.w_high;
      t.slope = s.slope;
      sample_position_slopes(axis, spatial_scale, p, i, &t.d_lo, &t.d_hi);
      taps.push_back(t);
    }
  }
  begin[pooled] = static_cast<int32_t>(taps.size());
}

// Taps of every RoI. rois: [K, 5] contiguous, levels[k] the pyramid level of RoI k (nullptr: all
// on level 0). Raises a ValueError naming the first RoI whose batch index is not an integer in
// [0, batch_size).
template <typename scalar_t, typename acc_t>
std::vector<RoiTaps<acc_t>> build_roi_taps(const char* op, const at::Tensor& rois, const int64_t* levels,
                                           const std::vector<LevelShape>& shapes, int64_t batch_size,
                                           int64_t pooled_height, int64_t pooled_width,
                                           int64_t sampling_ratio, bool aligned) {
  const int64_t num_rois = rois.size(0);
  const scalar_t* r = rois.const_data_ptr<scalar_t>();
  std::vector<RoiTaps<acc_t>> taps(num_rois);
  std::atomic<int64_t> first_bad{num_rois};
  at::parallel_for(0, num_rois, 16, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const scalar_t* roi = r + 5 * k;
      const acc_t b = static_cast<acc_t>(roi[0]);
      RoiTaps<acc_t>& t = taps[k];
      if (!(b >= acc_t(0) && b < static_cast<acc_t>(batch_size) && b == static_cast<acc_t>(static_cast<int64_t>(b)))) {
        int64_t seen = first_bad.load();
        while (k < seen && !first_bad.compare_exchange_weak(seen, k)) {
        }
        continue;
      }
      t.batch = static_cast<int64_t>(b);
      t.level = levels ? levels[k] : 0;
      const LevelShape& shape = shapes[t.level];
      const acc_t scale = static_cast<acc_t>(shape.spatial_scale);
      const acc_t x1 = static_cast<acc_t>(roi[1]), y1 = static_cast<acc_t>(roi[2]);
      const acc_t x2 = static_cast<acc_t>(roi[3]), y2 = static_cast<acc_t>(roi[4]);
      if (!roi_is_finite(x1, y1, x2, y2)) {
        t.y_begin.assign(pooled_height + 1, 0);  // no taps: pools to 0, no gradient
        t.x_begin.assign(pooled_width + 1, 0);
        continue;
      }
      const RoiAxis<acc_t> ay = roi_align_axis(y1, y2, scale, pooled_height, sampling_ratio, aligned);
      const RoiAxis<acc_t> ax = roi_align_axis(x1, x2, scale, pooled_width, sampling_ratio, aligned);
      t.inv_count = roi_align_inv_count(ay, ax);
      build_axis_taps(ay, scale, pooled_height, shape.height, t.y_begin, t.ys);
      build_axis_taps(ax, scale, pooled_width, shape.width, t.x_begin, t.xs);
    }
  });
  const int64_t bad = first_bad.load();
  if (bad < num_rois) {
    TORCH_CHECK_VALUE(false, op, ": rois[", bad, ", 0] (the batch index) must be an integer in [0, ",
                      batch_size, "), got ", static_cast<double>(r[5 * bad]));
  }
  return taps;
}

// RoI indices grouped by (level, image), each group in increasing RoI order: group g = level *
// batch_size + image holds order[offsets[g] .. offsets[g + 1]).
template <typename acc_t>
void group_rois(const std::vector<RoiTaps<acc_t>>& taps, int64_t num_levels, int64_t batch_size,
                std::vector<int64_t>& offsets, std::vector<int64_t>& order) {
  offsets.assign(num_levels * batch_size + 1, 0);
  for (const auto& t : taps) {
    ++offsets[t.level * batch_size + t.batch + 1];
  }
  for (size_t g = 1; g < offsets.size(); ++g) {
    offsets[g] += offsets[g - 1];
  }
  order.resize(taps.size());
  std::vector<int64_t> fill(offsets.begin(), offsets.end() - 1);
  for (size_t k = 0; k < taps.size(); ++k) {
    order[fill[taps[k].level * batch_size + taps[k].batch]++] = static_cast<int64_t>(k);
  }
}

// RoIs ordered by (level, image), then along a Z-order (Morton) curve of the centres of the
// pixels they read, in 8-pixel cells: consecutive RoIs of a thread lie close together in both
// directions and overlap, so they find much of their data in cache. The order only changes which
// thread computes a RoI, never its result.
template <typename acc_t>
std::vector<int64_t> spatial_order(const std::vector<RoiTaps<acc_t>>& taps) {
  std::vector<std::tuple<int64_t, int64_t, uint64_t, int64_t>> keys(taps.size());
  for (size_t k = 0; k < taps.size(); ++k) {
    const RoiTaps<acc_t>& t = taps[k];
    const int64_t y = t.ys.empty() ? 0 : (t.ys.front().low + t.ys.back().high) / 2;
    const int64_t x = t.xs.empty() ? 0 : (t.xs.front().low + t.xs.back().high) / 2;
    const uint64_t cy = static_cast<uint64_t>(std::max<int64_t>(0, y)) / 8;
    const uint64_t cx = static_cast<uint64_t>(std::max<int64_t>(0, x)) / 8;
    uint64_t m = 0;
    for (int bit = 0; bit < 28; ++bit) {
      m |= ((cy >> bit) & 1u) << (2 * bit + 1);
      m |= ((cx >> bit) & 1u) << (2 * bit);
    }
    keys[k] = std::make_tuple(t.level, t.batch, m, static_cast<int64_t>(k));
  }
  std::sort(keys.begin(), keys.end());
  std::vector<int64_t> visit(taps.size());
  for (size_t j = 0; j < keys.size(); ++j) {
    visit[j] = std::get<3>(keys[j]);
  }
  return visit;
}

// ---- forward ---------------------------------------------------------------------------------

// Channels per task of the channels_last backward: 128 bytes of the gradient per pixel.
template <typename scalar_t>
constexpr int64_t channel_block() {
  return static_cast<int64_t>(128 / sizeof(scalar_t)) > 0 ? static_cast<int64_t>(128 / sizeof(scalar_t)) : 1;
}

// Orders this thread's streaming stores (the kernels write some large outputs with them) before
// what it writes next, such as the thread pool's "done".
inline void streaming_stores_done() {
#if defined(__AVX512F__)
  _mm_sfence();
#endif
}

// dst[0, n) = src[0, n) for a run of a large output that nothing reads soon, with streaming stores
// when dst is 64-byte aligned (no read of each line before it is overwritten whole).
template <typename T>
inline void stream_copy(const T* src, int64_t n, T* dst) {
  int64_t i = 0;
#if defined(__AVX512F__)
  if (reinterpret_cast<uintptr_t>(dst) % 64 == 0) {
    constexpr int64_t kPerLine = 64 / sizeof(T);
    for (; i + kPerLine <= n; i += kPerLine) {
      _mm512_stream_si512(reinterpret_cast<__m512i*>(dst + i), _mm512_loadu_si512(src + i));
    }
  }
#endif
  std::copy(src + i, src + n, dst + i);
}

// Sets a large buffer that is about to be scattered into to zero, in parallel, with streaming
// stores where the hardware has them: Tensor::zero_ would first read every line in.
template <typename T>
void zero_streaming(T* data, int64_t n) {
  at::parallel_for(0, n, int64_t{1} << 16, [&](int64_t begin, int64_t end) {
    int64_t i = begin;
#if defined(__AVX512F__)
    constexpr int64_t kPerLine = 64 / sizeof(T);
    for (; i < end && reinterpret_cast<uintptr_t>(data + i) % 64 != 0; ++i) {
      data[i] = T(0);
    }
    const __m512i zero = _mm512_setzero_si512();
    for (; i + kPerLine <= end; i += kPerLine) {
      _mm512_stream_si512(reinterpret_cast<__m512i*>(data + i), zero);
    }
#endif
    for (; i < end; ++i) {
      data[i] = T(0);
    }
    streaming_stores_done();
  });
}

// Pools one RoI from an image laid out [H, W, channels] (pixel stride `channels`, row stride
// W * channels) into out_roi, whose element (c, bin) is at c * out_channel_stride + bin *
// out_bin_stride. Each sample reads 4 runs of `channels` contiguous values; acc: `channels` values
// of scratch. kStreamOut: out_roi is part of a large output, written with streaming stores where
// possible (the caller calls streaming_stores_done).
template <bool kStreamOut = false, typename in_t, typename acc_t, typename out_t>
inline void pool_roi_channels_last(const RoiTaps<acc_t>& t, const in_t* image, int64_t width, int64_t channels,
                                   int64_t pooled_height, int64_t pooled_width, out_t* out_roi,
                                   int64_t out_channel_stride, int64_t out_bin_stride, int64_t out_channels,
                                   acc_t* a) {
  const int64_t row_stride = width * channels;
  const acc_t inv = t.inv_count;
  for (int64_t ph = 0; ph < pooled_height; ++ph) {
    for (int64_t pw = 0; pw < pooled_width; ++pw) {
      std::fill(a, a + channels, acc_t(0));
      for (int32_t iy = t.y_begin[ph]; iy < t.y_begin[ph + 1]; ++iy) {
        const Tap<acc_t>& ty = t.ys[iy];
        const in_t* row_lo = image + ty.low * row_stride;
        const in_t* row_hi = image + ty.high * row_stride;
        for (int32_t ix = t.x_begin[pw]; ix < t.x_begin[pw + 1]; ++ix) {
          const Tap<acc_t>& tx = t.xs[ix];
          const in_t* p1 = row_lo + tx.low * channels;
          const in_t* p2 = row_lo + tx.high * channels;
          const in_t* p3 = row_hi + tx.low * channels;
          const in_t* p4 = row_hi + tx.high * channels;
          const acc_t w1 = ty.w_low * tx.w_low, w2 = ty.w_low * tx.w_high;
          const acc_t w3 = ty.w_high * tx.w_low, w4 = ty.w_high * tx.w_high;
#pragma omp simd
          for (int64_t c = 0; c < channels; ++c) {
            a[c] += w1 * static_cast<acc_t>(p1[c]) + w2 * static_cast<acc_t>(p2[c]) +
                    w3 * static_cast<acc_t>(p3[c]) + w4 * static_cast<acc_t>(p4[c]);
          }
        }
      }
      out_t* o = out_roi + (ph * pooled_width + pw) * out_bin_stride;
#if defined(__AVX512F__)
      if constexpr (kStreamOut && std::is_same_v<out_t, float> && std::is_same_v<acc_t, float>) {
        // Whole 64-byte lines of a large output nothing reads soon: streaming stores skip reading
        // each line in first (the caller fences them, see streaming_stores_done).
        if (out_channel_stride == 1 && out_channels % 16 == 0 && reinterpret_cast<uintptr_t>(o) % 64 == 0) {
          const __m512 scale = _mm512_set1_ps(inv);
          for (int64_t c = 0; c < out_channels; c += 16) {
            _mm512_stream_ps(o + c, _mm512_mul_ps(_mm512_loadu_ps(a + c), scale));
          }
          continue;
        }
      }
#endif
      if (out_channel_stride == 1) {
#pragma omp simd
        for (int64_t c = 0; c < out_channels; ++c) {
          o[c] = static_cast<out_t>(a[c] * inv);
        }
      } else {
        for (int64_t c = 0; c < out_channels; ++c) {
          o[c * out_channel_stride] = static_cast<out_t>(a[c] * inv);
        }
      }
    }
  }
}

// inputs[l]: [N, H_l, W_l, C] in memory (channels_last); out: [K, C, PH, PW] channels_last.
// Parallel over RoIs, visited in spatial order. (Blocking channels so that a slice of the maps
// stays in cache measured slower for channels_last input.)
template <typename scalar_t, typename acc_t>
void roi_align_forward_channels_last(const std::vector<RoiTaps<acc_t>>& taps,
                                     const std::vector<const scalar_t*>& inputs,
                                     const std::vector<LevelShape>& shapes, int64_t channels,
                                     int64_t pooled_height, int64_t pooled_width, scalar_t* out,
                                     int64_t out_channel_stride, int64_t out_bin_stride) {
  const int64_t num_rois = static_cast<int64_t>(taps.size());
  const std::vector<int64_t> visit = spatial_order(taps);
  at::parallel_for(0, num_rois, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(channels);
    for (int64_t j = begin; j < end; ++j) {
      const int64_t k = visit[j];
      const RoiTaps<acc_t>& t = taps[k];
      const LevelShape& shape = shapes[t.level];
      const scalar_t* image = inputs[t.level] + t.batch * shape.height * shape.width * channels;
      pool_roi_channels_last<true>(t, image, shape.width, channels, pooled_height, pooled_width,
                                   out + k * channels * pooled_height * pooled_width, out_channel_stride,
                                   out_bin_stride, channels, acc.data());
    }
    streaming_stores_done();
  });
}

// Channels per block of the NCHW kernels' transposed scratch: one 64-byte line of acc_t per pixel.
template <typename acc_t>
constexpr int64_t nchw_block() {
  return static_cast<int64_t>(64 / sizeof(acc_t));
}

#if defined(__AVX__)
// dst[i * dst_stride + j] = src[j * src_stride + i] for an 8 x 8 block of floats, in registers.
inline void transpose_8x8(const float* src, int64_t src_stride, float* dst, int64_t dst_stride) {
  __m256 r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm256_loadu_ps(src + i * src_stride);
  }
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    u[4 * i + 0] = _mm256_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0x44);
    u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0xEE);
    u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(dst + i * dst_stride, _mm256_permute2f128_ps(u[i], u[i + 4], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * dst_stride, _mm256_permute2f128_ps(u[i], u[i + 4], 0x31));
  }
}

// dst[c * dst_stride + r] = src[r * src_stride + c] for a rows x cols block of floats, both
// multiples of 8, by 8 x 8 register transposes.
inline void transpose_floats(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t rows,
                             int64_t cols) {
  for (int64_t r = 0; r < rows; r += 8) {
    for (int64_t c = 0; c < cols; c += 8) {
      transpose_8x8(src + r * src_stride + c, src_stride, dst + c * dst_stride + r, dst_stride);
    }
  }
}
#endif

// The NCHW kernels work on a block of channels at a time, copied into a scratch laid out
// [H, W, block] in acc_t, and only on the map rows some RoI reads. These two copy the pixels
// [p_begin, p_end) of `nc` channel planes (plane stride `plane`) into and out of such a scratch.
// Both walk 64 pixels of every plane at a time, so the planes are read or written front to back.
template <typename scalar_t, typename acc_t>
void planes_to_block(const scalar_t* src, int64_t plane, int64_t p_begin, int64_t p_end, int64_t nc, int64_t block,
                     acc_t* dst) {
  constexpr int64_t kTile = 64;
  for (int64_t p0 = p_begin; p0 < p_end; p0 += kTile) {
    const int64_t p1 = std::min(p_end, p0 + kTile);
#if defined(__AVX__)
    if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<acc_t, float>) {
      if (nc == block && block % 8 == 0 && (p1 - p0) % 8 == 0) {
        // Sixteen planes are more streams than the hardware prefetcher follows: ask for the
        // lines of the tile after next.
        if (p0 + 3 * kTile <= p_end) {
          for (int64_t i = 0; i < block; ++i) {
            for (int64_t q = 0; q < kTile; q += 16) {
              _mm_prefetch(reinterpret_cast<const char*>(src + i * plane + p0 + 2 * kTile + q), _MM_HINT_T0);
            }
          }
        }
        transpose_floats(src + p0, plane, dst + p0 * block, block, block, p1 - p0);  // [block][p] -> [p][block]
        continue;
      }
    }
#endif
    for (int64_t i = 0; i < block; ++i) {
      const scalar_t* s = src + i * plane;
      for (int64_t p = p0; p < p1; ++p) {
        dst[p * block + i] = i < nc ? static_cast<acc_t>(s[p]) : acc_t(0);  // a short block's tail is 0
      }
    }
  }
}

template <typename acc_t, typename scalar_t>
void block_to_planes(const acc_t* src, int64_t plane, int64_t p_begin, int64_t p_end, int64_t nc, int64_t block,
                     scalar_t* dst) {
  constexpr int64_t kTile = 64;
  for (int64_t p0 = p_begin; p0 < p_end; p0 += kTile) {
    const int64_t p1 = std::min(p_end, p0 + kTile);
#if defined(__AVX__)
    if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<acc_t, float>) {
      if (nc == block && block % 8 == 0 && (p1 - p0) % 8 == 0) {
        transpose_floats(src + p0 * block, block, dst + p0, plane, p1 - p0, block);  // [p][block] -> [block][p]
        continue;
      }
    }
#endif
    for (int64_t i = 0; i < nc; ++i) {
      scalar_t* d = dst + i * plane;
      for (int64_t p = p0; p < p1; ++p) {
        d[p] = static_cast<scalar_t>(src[p * block + i]);
      }
    }
  }
}

// Calls fn(begin, end) for every maximal run [begin, end) of set flags, in order.
template <typename Fn>
void for_each_run(const std::vector<char>& flags, Fn fn) {
  const int64_t size = static_cast<int64_t>(flags.size());
  for (int64_t r = 0; r < size;) {
    if (!flags[r]) {
      ++r;
      continue;
    }
    int64_t e = r;
    while (e < size && flags[e]) ++e;
    fn(r, e);
    r = e;
  }
}

// What the NCHW kernels share: RoIs grouped by (level, image) in spatial order, the channel block,
// and for every group the map rows its RoIs read (the only rows copied or written back).
template <typename acc_t>
struct NchwPlan {
  static constexpr int64_t kLine = 64 / sizeof(acc_t);  // channels per block: one cache line per pixel
  int64_t groups = 0, block = 0, blocks = 0;
  std::vector<int64_t> visit, offsets;  // group g's RoIs are visit[offsets[g] .. offsets[g + 1])
  std::vector<std::vector<char>> rows_read;  // [group][row]

  NchwPlan(const std::vector<RoiTaps<acc_t>>& taps, const std::vector<LevelShape>& shapes, int64_t batch_size,
           int64_t channels)
      : groups(static_cast<int64_t>(shapes.size()) * batch_size),
        visit(spatial_order(taps)),
        offsets(groups + 1, 0),
        rows_read(groups) {
    block = std::min<int64_t>(kLine, channels);
    blocks = (channels + block - 1) / block;
    for (const auto& t : taps) {
      const int64_t g = t.level * batch_size + t.batch;
      ++offsets[g + 1];
      std::vector<char>& rows = rows_read[g];
      rows.resize(shapes[t.level].height, 0);
      for (const Tap<acc_t>& ty : t.ys) {
        rows[ty.low] = rows[ty.high] = 1;
      }
    }
    for (size_t g = 1; g < offsets.size(); ++g) {
      offsets[g] += offsets[g - 1];
    }
  }

  int64_t num_tasks() const { return groups * blocks; }

  // Task -> (group, first channel of its block). The block varies slowest, so that each of
  // at::parallel_for's contiguous chunks of tasks gets a share of every group: pyramid levels
  // differ widely in work.
  void task(int64_t t, int64_t* group, int64_t* c0) const {
    *group = t % groups;
    *c0 = (t / groups) * block;
  }

  // Calls fn(row_begin, row_end) for every maximal run of rows read in group g.
  template <typename Fn>
  void for_row_runs(int64_t g, Fn fn) const {
    for_each_run(rows_read[g], fn);
  }
};

// inputs[l]: [N, C, H_l, W_l] contiguous (NCHW); out: [K, C, PH, PW] contiguous. Tasks are (level,
// image, block of channels): a task copies the rows its RoIs read of its channel planes into the
// scratch (reading the planes front to back; the scratch, one cache line per pixel, stays in
// cache), pools all RoIs of that image and level from it with the vectorized kernel, and writes
// each RoI's block of the output front to back. Cheaper than transposing the whole map, and than
// sampling the planes in place, where every tap is a scalar read.
template <typename scalar_t, typename acc_t>
void roi_align_forward_nchw(const std::vector<RoiTaps<acc_t>>& taps, const std::vector<const scalar_t*>& inputs,
                            const std::vector<LevelShape>& shapes, int64_t batch_size, int64_t channels,
                            int64_t pooled_height, int64_t pooled_width, scalar_t* out) {
  const NchwPlan<acc_t> plan(taps, shapes, batch_size, channels);
  const int64_t block = plan.block;
  constexpr int64_t kLine = NchwPlan<acc_t>::kLine;
  const int64_t bins = pooled_height * pooled_width;
  at::parallel_for(0, plan.num_tasks(), 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> scratch, acc(block), pooled(bins * block);
    std::vector<scalar_t> roi_out(bins * block);
    for (int64_t task = begin; task < end; ++task) {
      int64_t group, c0;  // group: level * batch_size + image
      plan.task(task, &group, &c0);
      if (plan.offsets[group] == plan.offsets[group + 1]) {
        continue;
      }
      const int64_t nc = std::min(block, channels - c0);
      const int64_t level = group / batch_size;
      const int64_t n = group % batch_size;
      const int64_t width = shapes[level].width;
      const int64_t plane = shapes[level].height * width;
      scratch.resize(plane * block);
      const scalar_t* planes = inputs[level] + (n * channels + c0) * plane;
      plan.for_row_runs(group, [&](int64_t r0, int64_t r1) {
        planes_to_block(planes, plane, r0 * width, r1 * width, nc, block, scratch.data());
      });
      for (int64_t j = plan.offsets[group]; j < plan.offsets[group + 1]; ++j) {
        const int64_t k = plan.visit[j];
        if (block == kLine) {  // a compile-time channel count: the loops over channels unroll
          pool_roi_channels_last(taps[k], scratch.data(), width, kLine, pooled_height, pooled_width, pooled.data(),
                                 int64_t(1), kLine, kLine, acc.data());
        } else {
          pool_roi_channels_last(taps[k], scratch.data(), width, block, pooled_height, pooled_width, pooled.data(),
                                 int64_t(1), block, block, acc.data());
        }
        // The RoI's block of the output is one contiguous run: assembled here, streamed out.
        block_to_planes(pooled.data(), bins, 0, bins, nc, block, roi_out.data());
        stream_copy(roi_out.data(), nc * bins, out + (k * channels + c0) * bins);
      }
    }
    streaming_stores_done();
  });
}

// ---- backward to the input -------------------------------------------------------------------

// Adds one RoI's share of the gradient into an image laid out [H, W, pixel_stride] (channels
// [0, nc) of each pixel). g: the RoI's gradient, element (c, bin) at c * grad_channel_stride +
// bin * grad_bin_stride; gb: nc values of scratch.
template <typename grad_t, typename acc_t>
inline void scatter_roi_channels_last(const RoiTaps<acc_t>& t, const grad_t* g, int64_t grad_channel_stride,
                                      int64_t grad_bin_stride, acc_t* image, int64_t width, int64_t pixel_stride,
                                      int64_t nc, int64_t pooled_height, int64_t pooled_width, acc_t* gb) {
  const int64_t row_stride = width * pixel_stride;
  for (int64_t ph = 0; ph < pooled_height; ++ph) {
    for (int64_t pw = 0; pw < pooled_width; ++pw) {
      const grad_t* gbin = g + (ph * pooled_width + pw) * grad_bin_stride;
      bool any = false;
      for (int64_t c = 0; c < nc; ++c) {
        gb[c] = static_cast<acc_t>(gbin[c * grad_channel_stride]) * t.inv_count;
        any |= gb[c] != acc_t(0);
      }
      if (!any) {
        continue;
      }
      for (int32_t iy = t.y_begin[ph]; iy < t.y_begin[ph + 1]; ++iy) {
        const Tap<acc_t>& ty = t.ys[iy];
        acc_t* row_lo = image + ty.low * row_stride;
        acc_t* row_hi = image + ty.high * row_stride;
        for (int32_t ix = t.x_begin[pw]; ix < t.x_begin[pw + 1]; ++ix) {
          const Tap<acc_t>& tx = t.xs[ix];
          const acc_t w[4] = {ty.w_low * tx.w_low, ty.w_low * tx.w_high, ty.w_high * tx.w_low, ty.w_high * tx.w_high};
          acc_t* p[4] = {row_lo + tx.low * pixel_stride, row_lo + tx.high * pixel_stride,
                         row_hi + tx.low * pixel_stride, row_hi + tx.high * pixel_stride};
          // One corner at a time: corners may coincide at the border, and each pass must see the
          // previous one's writes.
          for (int corner = 0; corner < 4; ++corner) {
            const acc_t wc = w[corner];
            if (wc == acc_t(0)) {
              continue;
            }
            acc_t* pc = p[corner];
#pragma omp simd
            for (int64_t c = 0; c < nc; ++c) {
              pc[c] += wc * gb[c];
            }
          }
        }
      }
    }
  }
}

// grad: [K, C, PH, PW] contiguous; grad_inputs[l]: [N, C, H_l, W_l] contiguous, every element
// written here. The adjoint of roi_align_forward_nchw, with the same tasks: a task zeroes the rows
// its RoIs read in the scratch, scatters every RoI's block of the gradient into it, then writes
// its channel planes once, front to back (zeros in the rows no RoI reads). Each element has one
// writer and a fixed order of additions.
template <typename scalar_t, typename acc_t>
void roi_align_backward_nchw(const std::vector<RoiTaps<acc_t>>& taps, const scalar_t* grad,
                             const std::vector<scalar_t*>& grad_inputs, const std::vector<LevelShape>& shapes,
                             int64_t batch_size, int64_t channels, int64_t pooled_height, int64_t pooled_width) {
  const NchwPlan<acc_t> plan(taps, shapes, batch_size, channels);
  const int64_t block = plan.block;
  constexpr int64_t kLine = NchwPlan<acc_t>::kLine;
  const int64_t bins = pooled_height * pooled_width;
  at::parallel_for(0, plan.num_tasks(), 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> scratch, gb(block), roi_grad(bins * block);
    for (int64_t task = begin; task < end; ++task) {
      int64_t group, c0;
      plan.task(task, &group, &c0);
      const int64_t nc = std::min(block, channels - c0);
      const int64_t level = group / batch_size;
      const int64_t n = group % batch_size;
      const int64_t width = shapes[level].width;
      const int64_t plane = shapes[level].height * width;
      scalar_t* planes = grad_inputs[level] + (n * channels + c0) * plane;
      if (plan.offsets[group] == plan.offsets[group + 1]) {
        for (int64_t i = 0; i < nc; ++i) {
          std::fill(planes + i * plane, planes + (i + 1) * plane, scalar_t(0));
        }
        continue;
      }
      scratch.resize(plane * block);
      plan.for_row_runs(group, [&](int64_t r0, int64_t r1) {
        std::fill(scratch.data() + r0 * width * block, scratch.data() + r1 * width * block, acc_t(0));
      });
      for (int64_t j = plan.offsets[group]; j < plan.offsets[group + 1]; ++j) {
        const int64_t k = plan.visit[j];
        // The RoI's [nc, bins] block of the gradient as [bins, block], read front to back.
        planes_to_block(grad + (k * channels + c0) * bins, bins, 0, bins, nc, block, roi_grad.data());
        if (nc == kLine) {  // a compile-time channel count: the loops over channels unroll
          scatter_roi_channels_last(taps[k], roi_grad.data(), int64_t(1), kLine, scratch.data(), width, kLine, kLine,
                                    pooled_height, pooled_width, gb.data());
        } else {
          scatter_roi_channels_last(taps[k], roi_grad.data(), int64_t(1), block, scratch.data(), width, block, nc,
                                    pooled_height, pooled_width, gb.data());
        }
      }
      int64_t done = 0;  // rows [0, done) of the planes are written
      auto zero_rows = [&](int64_t r0, int64_t r1) {
        for (int64_t i = 0; i < nc; ++i) {
          std::fill(planes + i * plane + r0 * width, planes + i * plane + r1 * width, scalar_t(0));
        }
      };
      plan.for_row_runs(group, [&](int64_t r0, int64_t r1) {
        zero_rows(done, r0);
        block_to_planes(scratch.data(), plane, r0 * width, r1 * width, nc, block, planes);
        done = r1;
      });
      zero_rows(done, shapes[level].height);
    }
  });
}

// grad: [K, C, PH, PW] with element (k, c, bin) at k * C * PH * PW + c * grad_channel_stride +
// bin * grad_bin_stride; grad_inputs[l]: [N, H_l, W_l, C] in memory, zero-filled. Tasks are
// (level, image, block of channels); each owns its slice of the gradient.
template <typename scalar_t, typename acc_t>
void roi_align_backward_channels_last(const std::vector<RoiTaps<acc_t>>& taps, const scalar_t* grad,
                                      int64_t grad_channel_stride, int64_t grad_bin_stride,
                                      const std::vector<acc_t*>& grad_inputs,
                                      const std::vector<LevelShape>& shapes, int64_t batch_size,
                                      int64_t channels, int64_t pooled_height, int64_t pooled_width) {
  const int64_t num_levels = static_cast<int64_t>(grad_inputs.size());
  std::vector<int64_t> offsets, order;
  group_rois(taps, num_levels, batch_size, offsets, order);
  // As few channel blocks as keep every thread busy: each bilinear corner then updates one long
  // contiguous run (all C values when there are enough images), which the hardware streams; short
  // runs made this scatter latency-bound (measured: 128-byte runs were ~5x slower than 1 KB).
  const int64_t groups = num_levels * batch_size;
  const int64_t wanted_blocks = (at::get_num_threads() + groups - 1) / groups;
  constexpr int64_t kAlign = channel_block<scalar_t>() / 2;  // 64 bytes
  const int64_t block = std::max<int64_t>(
      kAlign, ((channels + wanted_blocks - 1) / wanted_blocks + kAlign - 1) / kAlign * kAlign);
  const int64_t blocks = (channels + block - 1) / block;
  at::parallel_for(0, groups * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> gb(block);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t group = task / blocks;
      const int64_t c0 = (task % blocks) * block;
      const int64_t nc = std::min(block, channels - c0);
      const int64_t level = group / batch_size;
      const int64_t n = group % batch_size;
      acc_t* image = grad_inputs[level] + n * shapes[level].height * shapes[level].width * channels + c0;
      for (int64_t j = offsets[group]; j < offsets[group + 1]; ++j) {
        const int64_t k = order[j];
        scatter_roi_channels_last(taps[k], grad + k * channels * pooled_height * pooled_width + c0 * grad_channel_stride,
                                  grad_channel_stride, grad_bin_stride, image, shapes[level].width, channels, nc,
                                  pooled_height, pooled_width, gb.data());
      }
    }
  });
}

// ---- backward to the box coordinates -----------------------------------------------------------

// The scalar walk of the box-gradient kernels: for every sample of bin (ph, pw) of RoI t, calls
// fn(ty, tx, v_ll, v_lh, v_hl, v_hh) with its taps and the four corner values of one channel plane
// (element strides st[2] for rows, st[3] for columns: any memory format), in acc_t.
template <typename acc_t, typename scalar_t, typename Fn>
inline void for_each_sample_corners(const RoiTaps<acc_t>& t, const scalar_t* plane, const std::array<int64_t, 4>& st,
                                    int64_t ph, int64_t pw, Fn fn) {
  for (int32_t iy = t.y_begin[ph]; iy < t.y_begin[ph + 1]; ++iy) {
    const Tap<acc_t>& ty = t.ys[iy];
    const scalar_t* row_lo = plane + ty.low * st[2];
    const scalar_t* row_hi = plane + ty.high * st[2];
    for (int32_t ix = t.x_begin[pw]; ix < t.x_begin[pw + 1]; ++ix) {
      const Tap<acc_t>& tx = t.xs[ix];
      fn(ty, tx, static_cast<acc_t>(row_lo[tx.low * st[3]]), static_cast<acc_t>(row_lo[tx.high * st[3]]),
         static_cast<acc_t>(row_hi[tx.low * st[3]]), static_cast<acc_t>(row_hi[tx.high * st[3]]));
    }
  }
}

// d(sum(grad * roi_align(input, rois)))/d(rois): grad_rois[k] = (0, dx1, dy1, dx2, dy2), in acc_t.
// Any memory format (strides in elements); parallel over RoIs, each writes its own row.
template <typename scalar_t, typename acc_t>
void roi_align_backward_rois_any(const std::vector<RoiTaps<acc_t>>& taps, const scalar_t* grad,
                                 const int64_t* grad_strides, const std::vector<const scalar_t*>& inputs,
                                 const std::vector<std::array<int64_t, 4>>& input_strides, int64_t channels,
                                 int64_t pooled_height, int64_t pooled_width, acc_t* grad_rois) {
  const int64_t num_rois = static_cast<int64_t>(taps.size());
  at::parallel_for(0, num_rois, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const RoiTaps<acc_t>& t = taps[k];
      const auto& st = input_strides[t.level];
      const scalar_t* image = inputs[t.level] + t.batch * st[0];
      acc_t dx1 = 0, dy1 = 0, dx2 = 0, dy2 = 0;
      for (int64_t c = 0; c < channels; ++c) {
        const scalar_t* plane = image + c * st[1];
        for (int64_t ph = 0; ph < pooled_height; ++ph) {
          for (int64_t pw = 0; pw < pooled_width; ++pw) {
            const acc_t gb = static_cast<acc_t>(grad[k * grad_strides[0] + c * grad_strides[1] +
                                                     ph * grad_strides[2] + pw * grad_strides[3]]) *
                             t.inv_count;
            if (gb == acc_t(0)) {
              continue;
            }
            for_each_sample_corners(t, plane, st, ph, pw,
                                    [&](const Tap<acc_t>& ty, const Tap<acc_t>& tx, acc_t v_ll, acc_t v_lh,
                                        acc_t v_hl, acc_t v_hh) {
                                      acc_t d_y, d_x;
                                      bilinear_gradient(ty, tx, v_ll, v_lh, v_hl, v_hh, &d_y, &d_x);
                                      dy1 += gb * d_y * ty.d_lo;
                                      dy2 += gb * d_y * ty.d_hi;
                                      dx1 += gb * d_x * tx.d_lo;
                                      dx2 += gb * d_x * tx.d_hi;
                                    });
          }
        }
      }
      acc_t* out = grad_rois + 5 * k;
      out[0] = 0;
      out[1] = dx1;
      out[2] = dy1;
      out[3] = dx2;
      out[4] = dy2;
    }
  });
}

// ---- second derivatives through the box gradient -----------------------------------------------
//
// The box gradient B = d<grad, roi_align(input, rois)>/d(rois), paired with the gradient that
// flows back into it (u = grad_grad_rois, [K, 5]), is
//   S = <u, B> = sum over channels, bins and samples of grad * inv_count * (d_y * move_y + d_x * move_x)
// where move_y = d_lo * u_y1 + d_hi * u_y2 is how far u moves the sample along y (likewise x).
// Its three derivatives are what the double backward needs:
// - d S/d grad: inv_count * sum (d_y * move_y + d_x * move_x) per bin, roi_align's derivative
//   along u (a forward-mode product);
// - d S/d input: S is linear in the corner values (bilinear_direction_weights), scattered like the
//   input backward;
// - d S/d rois: only the interpolation weights move with the box (slopes, d(position)/d(box) and
//   the sample counts are piecewise constant), and the only second derivative of a bilinear sample
//   is the cross one, d2/dydx.

// The first and the third: d_grad (grad's shape, any strides) and d_rois ([K, 5] in acc_t, column
// 0 zero). Parallel over RoIs; each writes its own rows.
template <typename scalar_t, typename acc_t>
void roi_align_box_second_order_per_roi(const std::vector<RoiTaps<acc_t>>& taps, const scalar_t* grad,
                                        const int64_t* grad_strides, const scalar_t* directions,
                                        const std::vector<const scalar_t*>& inputs,
                                        const std::vector<std::array<int64_t, 4>>& input_strides,
                                        int64_t channels, int64_t pooled_height, int64_t pooled_width,
                                        scalar_t* d_grad, const int64_t* d_grad_strides, acc_t* d_rois) {
  const int64_t num_rois = static_cast<int64_t>(taps.size());
  at::parallel_for(0, num_rois, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const RoiTaps<acc_t>& t = taps[k];
      const auto& st = input_strides[t.level];
      const scalar_t* image = inputs[t.level] + t.batch * st[0];
      const scalar_t* u = directions + 5 * k;
      const acc_t ux1 = static_cast<acc_t>(u[1]), uy1 = static_cast<acc_t>(u[2]);
      const acc_t ux2 = static_cast<acc_t>(u[3]), uy2 = static_cast<acc_t>(u[4]);
      acc_t rx1 = 0, ry1 = 0, rx2 = 0, ry2 = 0;
      for (int64_t c = 0; c < channels; ++c) {
        const scalar_t* plane = image + c * st[1];
        for (int64_t ph = 0; ph < pooled_height; ++ph) {
          for (int64_t pw = 0; pw < pooled_width; ++pw) {
            const acc_t gb = static_cast<acc_t>(grad[k * grad_strides[0] + c * grad_strides[1] +
                                                     ph * grad_strides[2] + pw * grad_strides[3]]) *
                             t.inv_count;
            acc_t along = 0;  // sum of d_y * move_y + d_x * move_x over the bin's samples
            for_each_sample_corners(
                t, plane, st, ph, pw,
                [&](const Tap<acc_t>& ty, const Tap<acc_t>& tx, acc_t v_ll, acc_t v_lh, acc_t v_hl, acc_t v_hh) {
                  const acc_t move_y = ty.d_lo * uy1 + ty.d_hi * uy2;
                  const acc_t move_x = tx.d_lo * ux1 + tx.d_hi * ux2;
                  acc_t d_y, d_x;
                  bilinear_gradient(ty, tx, v_ll, v_lh, v_hl, v_hh, &d_y, &d_x);
                  along += d_y * move_y + d_x * move_x;
                  // d S/d(position y) = gb * d2/dydx * move_x, and symmetrically for x.
                  const acc_t cross = gb * bilinear_cross_derivative(ty, tx, v_ll, v_lh, v_hl, v_hh);
                  ry1 += cross * move_x * ty.d_lo;
                  ry2 += cross * move_x * ty.d_hi;
                  rx1 += cross * move_y * tx.d_lo;
                  rx2 += cross * move_y * tx.d_hi;
                });
            d_grad[k * d_grad_strides[0] + c * d_grad_strides[1] + ph * d_grad_strides[2] + pw * d_grad_strides[3]] =
                static_cast<scalar_t>(along * t.inv_count);
          }
        }
      }
      acc_t* out = d_rois + 5 * k;
      out[0] = 0;
      out[1] = rx1;
      out[2] = ry1;
      out[3] = rx2;
      out[4] = ry2;
    }
  });
}

// The second: d S/d input, added into zero-filled acc_t maps (any strides, one per level).
// Parallel over (level, image, channel): each task owns one plane of one map and visits the RoIs
// in index order, so the sums do not depend on the thread count.
template <typename scalar_t, typename acc_t>
void roi_align_box_second_order_to_input(const std::vector<RoiTaps<acc_t>>& taps, const scalar_t* grad,
                                         const int64_t* grad_strides, const scalar_t* directions,
                                         const std::vector<acc_t*>& d_inputs,
                                         const std::vector<std::array<int64_t, 4>>& d_input_strides,
                                         int64_t batch_size, int64_t channels, int64_t pooled_height,
                                         int64_t pooled_width) {
  const int64_t num_levels = static_cast<int64_t>(d_inputs.size());
  const int64_t num_rois = static_cast<int64_t>(taps.size());
  at::parallel_for(0, num_levels * batch_size * channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t level = task / (batch_size * channels);
      const int64_t n = (task / channels) % batch_size;
      const int64_t c = task % channels;
      const auto& st = d_input_strides[level];
      acc_t* plane = d_inputs[level] + n * st[0] + c * st[1];
      for (int64_t k = 0; k < num_rois; ++k) {
        const RoiTaps<acc_t>& t = taps[k];
        if (t.level != level || t.batch != n) {
          continue;
        }
        const scalar_t* u = directions + 5 * k;
        const acc_t ux1 = static_cast<acc_t>(u[1]), uy1 = static_cast<acc_t>(u[2]);
        const acc_t ux2 = static_cast<acc_t>(u[3]), uy2 = static_cast<acc_t>(u[4]);
        for (int64_t ph = 0; ph < pooled_height; ++ph) {
          for (int64_t pw = 0; pw < pooled_width; ++pw) {
            const acc_t gb = static_cast<acc_t>(grad[k * grad_strides[0] + c * grad_strides[1] +
                                                     ph * grad_strides[2] + pw * grad_strides[3]]) *
                             t.inv_count;
            if (gb == acc_t(0)) {
              continue;
            }
            for (int32_t iy = t.y_begin[ph]; iy < t.y_begin[ph + 1]; ++iy) {
              const Tap<acc_t>& ty = t.ys[iy];
              const acc_t move_y = ty.d_lo * uy1 + ty.d_hi * uy2;
              acc_t* row_lo = plane + ty.low * st[2];
              acc_t* row_hi = plane + ty.high * st[2];
              for (int32_t ix = t.x_begin[pw]; ix < t.x_begin[pw + 1]; ++ix) {
                const Tap<acc_t>& tx = t.xs[ix];
                acc_t w[4];
                bilinear_direction_weights(ty, tx, move_y, tx.d_lo * ux1 + tx.d_hi * ux2, w);
                row_lo[tx.low * st[3]] += gb * w[0];
                row_lo[tx.high * st[3]] += gb * w[1];
                row_hi[tx.low * st[3]] += gb * w[2];
                row_hi[tx.high * st[3]] += gb * w[3];
              }
            }
          }
        }
      }
    }
  });
}

}  // namespace cpu
}  // namespace roiops

// ---- host drivers (defined in roi_align.cpp, used by roi_align and multi_scale_roi_align) ------

namespace roiops {
namespace cpu {

// True when the kernels take the channels_last path for this input: a 4-d tensor laid out as
// channels_last and not also plain contiguous (C == 1 or H == W == 1 are both; NCHW is used).
// roiops/_meta.py applies the same rule to the fake outputs.
bool use_channels_last(const at::Tensor& input);

// features: the pyramid levels ([N, C, H_l, W_l], one dtype); levels: the level of each RoI or
// nullptr for one level. Returns [K, C, PH, PW] in the memory format the kernels chose.
at::Tensor roi_align_forward_levels_cpu(const char* op, const std::vector<at::Tensor>& features,
                                        const at::Tensor& rois, const std::vector<double>& spatial_scales,
                                        const int64_t* levels, int64_t pooled_height, int64_t pooled_width,
                                        int64_t sampling_ratio, bool aligned);

std::vector<at::Tensor> roi_align_backward_levels_cpu(
    const char* op, const at::Tensor& grad, const at::Tensor& rois, const std::vector<double>& spatial_scales,
    const int64_t* levels, int64_t batch_size, int64_t channels, const std::vector<int64_t>& heights,
    const std::vector<int64_t>& widths, int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
    bool aligned, bool channels_last);

at::Tensor roi_align_backward_rois_levels_cpu(const char* op, const at::Tensor& grad,
                                              const std::vector<at::Tensor>& features, const at::Tensor& rois,
                                              const std::vector<double>& spatial_scales, const int64_t* levels,
                                              int64_t pooled_height, int64_t pooled_width,
                                              int64_t sampling_ratio, bool aligned);

// Second derivatives through the box gradient (see roi_align_box_second_order_per_roi): returns
// (d grad, d features (one per level, or none when !features_grad), d rois).
std::tuple<at::Tensor, std::vector<at::Tensor>, at::Tensor> roi_align_backward_rois_backward_levels_cpu(
    const char* op, const at::Tensor& grad, const std::vector<at::Tensor>& features, const at::Tensor& rois,
    const at::Tensor& grad_grad_rois, const std::vector<double>& spatial_scales, const int64_t* levels,
    int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned, bool features_grad);

// The FPN level index of every RoI (rois: [K, 5] in image pixels), clamped to the maps there are
// (all 0 for one map). Defined in multi_scale_roi_align.cpp.
std::vector<int64_t> assign_levels(const char* op, const at::Tensor& rois, const std::vector<double>& spatial_scales,
                                   double canonical_scale, int64_t canonical_level);

}  // namespace cpu
}  // namespace roiops
