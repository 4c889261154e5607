// Memory-layout helpers of the CPU kernels (RoIAlign, RoIPool): channel blocking, streaming
// stores for large outputs, register transposes between NCHW planes and a channels-last block of
// channels, and runs of flagged rows. Nothing here knows about RoIs.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>
#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace roiops {
namespace cpu {

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

#if defined(__AVX__)
// r[i][j] = r[j][i] for 8 rows of 8 floats in registers: pairs of rows, then quads, then halves.
__attribute__((always_inline)) inline void transpose_8x8_registers(__m256 r[8]) {
  __m256 t[8], u[8];
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
    r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}

// dst[i * dst_stride + j] = src[j * src_stride + i] for an 8 x 8 block of floats, in registers.
inline void transpose_8x8(const float* src, int64_t src_stride, float* dst, int64_t dst_stride) {
  __m256 r[8];
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm256_loadu_ps(src + i * src_stride);
  }
  transpose_8x8_registers(r);
  for (int i = 0; i < 8; ++i) {
    _mm256_storeu_ps(dst + i * dst_stride, r[i]);
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

// dst[i * dst_stride + j] = src[j * src_stride + i] for a 16 x 16 block of floats in registers,
// reading src rows j < kIn (the others count as 0) and writing dst rows i < kOut: kIn <= 16 channel
// planes to 16 pixels of a pixel-major scratch (kOut = 16), or back (kIn = 16, kOut channels).
// AVX-512: 16-wide rows, four shuffle stages; AVX: four 8 x 8 blocks (ROIOPS_TRANSPOSE_16X16 says
// that one of the two is compiled).
#if defined(__AVX512F__)
#define ROIOPS_TRANSPOSE_16X16 1
// GCC 12 reports the _mm512_undefined_ps() pass-through operand inside its own shuffle intrinsics
// as "(may be) used uninitialized" wherever they are inlined (a false positive, GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
template <int kIn, int kOut>
__attribute__((always_inline)) inline void transpose_16x16(const float* src, int64_t src_stride, float* dst,
                                                           int64_t dst_stride) {
  __m512 r[16], t[16], u[16];
  for (int i = 0; i < 16; ++i) {
    r[i] = i < kIn ? _mm512_loadu_ps(src + i * src_stride) : _mm512_setzero_ps();
  }
  for (int i = 0; i < 8; ++i) {  // t[2i], t[2i+1]: rows 2i and 2i+1 interleaved
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // u[4i + j], 128-bit quarter q: rows 4i .. 4i + 3 of column 4q + j
    u[4 * i + 0] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0x44);
    u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0xEE);
    u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int j = 0; j < 4; ++j) {  // column 4q + j: quarter q of u[j], u[4 + j], u[8 + j], u[12 + j]
    const __m512 v1 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x44);
    const __m512 v2 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xEE);
    const __m512 w1 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x44);
    const __m512 w2 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xEE);
    const __m512 o[4] = {_mm512_shuffle_f32x4(v1, w1, 0x88), _mm512_shuffle_f32x4(v1, w1, 0xDD),
                         _mm512_shuffle_f32x4(v2, w2, 0x88), _mm512_shuffle_f32x4(v2, w2, 0xDD)};
    for (int q = 0; q < 4; ++q) {
      if (4 * q + j < kOut) {
        _mm512_storeu_ps(dst + (4 * q + j) * dst_stride, o[q]);
      }
    }
  }
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#elif defined(__AVX__)
#define ROIOPS_TRANSPOSE_16X16 1
template <int kIn, int kOut>
__attribute__((always_inline)) inline void transpose_16x16(const float* src, int64_t src_stride, float* dst,
                                                           int64_t dst_stride) {
  for (int a = 0; a < 2 && 8 * a < kIn; ++a) {  // src rows 8a .. 8a + 7 = dst columns
    for (int b = 0; b < 2 && 8 * b < kOut; ++b) {  // src columns 8b .. 8b + 7 = dst rows
      __m256 r[8];
      for (int i = 0; i < 8; ++i) {
        r[i] = 8 * a + i < kIn ? _mm256_loadu_ps(src + (8 * a + i) * src_stride + 8 * b) : _mm256_setzero_ps();
      }
      transpose_8x8_registers(r);
      for (int i = 0; i < 8 && 8 * b + i < kOut; ++i) {
        _mm256_storeu_ps(dst + (8 * b + i) * dst_stride + 8 * a, r[i]);
      }
    }
  }
  if (kIn <= 8) {  // src rows 8 .. 15 are 0: dst columns 8 .. 15 too
    for (int i = 0; i < 16 && i < kOut; ++i) {
      _mm256_storeu_ps(dst + i * dst_stride + 8, _mm256_setzero_ps());
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
    int64_t p_scalar = p0;  // pixels [p0, p_scalar) done by register transposes
#if defined(__AVX__)
    if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<acc_t, float>) {
      if (nc == block && block % 8 == 0) {
        // Sixteen planes are more streams than the hardware prefetcher follows: ask for the
        // lines of the tile after next.
        if (p0 + 3 * kTile <= p_end) {
          for (int64_t i = 0; i < block; ++i) {
            for (int64_t q = 0; q < kTile; q += 16) {
              _mm_prefetch(reinterpret_cast<const char*>(src + i * plane + p0 + 2 * kTile + q), _MM_HINT_T0);
            }
          }
        }
        // The whole 8-pixel groups; a tail (a row width or bin count that is not a multiple of 8)
        // goes element-wise below.
        p_scalar = p0 + (p1 - p0) / 8 * 8;
        transpose_floats(src + p0, plane, dst + p0 * block, block, block, p_scalar - p0);  // [block][p] -> [p][block]
      }
    }
#endif
    for (int64_t i = 0; i < block; ++i) {
      const scalar_t* s = src + i * plane;
      for (int64_t p = p_scalar; p < p1; ++p) {
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
    int64_t p_scalar = p0;  // pixels [p0, p_scalar) done by register transposes
#if defined(__AVX__)
    if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<acc_t, float>) {
      if (nc == block && block % 8 == 0) {
        // The whole 8-pixel groups; a tail such as the 49th bin of a 7 x 7 RoI goes element-wise
        // below (a whole run left to the compiler became a slow loop of gathers).
        p_scalar = p0 + (p1 - p0) / 8 * 8;
        transpose_floats(src + p0 * block, block, dst + p0, plane, p_scalar - p0, block);  // [p][block] -> [block][p]
      }
    }
#endif
    for (int64_t i = 0; i < nc; ++i) {
      scalar_t* d = dst + i * plane;
      for (int64_t p = p_scalar; p < p1; ++p) {
        d[p] = static_cast<scalar_t>(src[p * block + i]);
      }
    }
  }
}

// dst[c * dst_stride + r] = src[r * src_stride + c] for a rows x cols block of any size: 8 x 8
// register transposes for float where they fit, element copies for the edges.
template <typename T>
void transpose_block(const T* src, int64_t src_stride, T* dst, int64_t dst_stride, int64_t rows, int64_t cols) {
  int64_t rows8 = 0, cols8 = 0;  // the part done by register transposes
#if defined(__AVX__)
  if constexpr (std::is_same_v<T, float>) {
    rows8 = rows / 8 * 8;
    cols8 = cols / 8 * 8;
    transpose_floats(src, src_stride, dst, dst_stride, rows8, cols8);
  }
#endif
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = r < rows8 ? cols8 : 0; c < cols; ++c) {
      dst[c * dst_stride + r] = src[r * src_stride + c];
    }
  }
}

// Every image of a map [n, channels, plane] between NCHW planes and channels_last pixels: planes
// to pixels (to_pixels) or back. Parallel over tiles of 256 pixels of an image; a tile goes 64
// pixels at a time, so the planes are read or written front to back while the 64 pixels' channels
// (125 KB for 490 channels) stay in cache.
template <typename T>
void transpose_map_layout(const T* src, T* dst, int64_t n, int64_t channels, int64_t plane, bool to_pixels) {
  constexpr int64_t kPixels = 256, kTile = 64;
  const int64_t tiles = (plane + kPixels - 1) / kPixels;
  at::parallel_for(0, n * tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t image = (task / tiles) * channels * plane;
      const int64_t t0 = (task % tiles) * kPixels, t1 = std::min(plane, t0 + kPixels);
      for (int64_t p0 = t0; p0 < t1; p0 += kTile) {
        const int64_t np = std::min(t1, p0 + kTile) - p0;
        if (to_pixels) {
          transpose_block(src + image + p0, plane, dst + image + p0 * channels, channels, channels, np);
        } else {
          transpose_block(src + image + p0 * channels, channels, dst + image + p0, plane, np, channels);
        }
      }
    }
  });
}

// Calls fn(begin, end) for every maximal run [begin, end) of set flags in flags[0, size), in order.
template <typename Fn>
void for_each_run(const char* flags, int64_t size, Fn fn) {
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

template <typename Fn>
void for_each_run(const std::vector<char>& flags, Fn fn) {
  for_each_run(flags.data(), static_cast<int64_t>(flags.size()), fn);
}

}  // namespace cpu
}  // namespace roiops
