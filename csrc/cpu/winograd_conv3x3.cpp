// A 3x3 convolution (stride 1, padding 1, optional bias and ReLU) on the CPU by Winograd's minimal
// filtering F(4x4, 3x3) (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks",
// 2016): every 4x4 block of output pixels (a tile) comes from the 6x6 input pixels around it as
//   Y = A^T [ sum_c (G g_kc G^T) . (B^T d_c B) ] A,
// 36 products per input-output channel pair where the direct convolution takes 144, so the work
// becomes 36 matrix products [tiles, C] x [C, K] with 4x fewer multiply-adds than the direct
// convolution's. The kernels' transforms U = G g G^T are computed once, by the caller
// (roiops.winograd_weight, in float64); this file transforms the input tiles (B^T d B), runs the
// 36 products, and transforms back (A^T m A) with bias and ReLU. The products are most of the
// time: on AVX-512 builds float32 runs them in its own register-blocked loop (matrix_product)
// where that beats MKL (products_by_blas), otherwise the BLAS's gemm (MKL or OpenBLAS).
//
// Tiles are processed in chunks of a few dozen, each chunk by one thread from its input transform
// to its output, so that the chunk's transformed tiles and products ([36, tiles, C] and [36,
// tiles, K], about 1.8 MB each for 48 tiles of 256 channels) stay in the caches between the three
// steps instead of making three passes over buffers ten times the feature map's size; small maps
// with wide weights run the three passes instead (see the kernel). The chunks are fixed by the
// tile count, not the thread count, so the result does not depend on it.
//
// Accuracy: the transforms' coefficients (up to 8 in A, 5 in B, 1/24 in G) round more than the
// direct sum's 9C products; against float64, the maximum error on 256 -> 256 channels, weights
// of std 0.02 and unit inputs is 2-4e-5 (the direct convolution of oneDNN: 0.6-1.2e-5), relative
// to outputs of magnitude ~1. Maps are channels_last ([N, H, W, C] in memory): a tile's pixels
// are rows of C contiguous channels, one vector load per pixel for eight or sixteen channels.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <dlfcn.h>

#include <algorithm>
#include <limits>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <optional>
#include <type_traits>
#include <vector>

#include "common/checks.h"
#include "cpu/cpu_vendor.h"

namespace roiops {
namespace cpu {
namespace {

constexpr int kTile = 4;              // output pixels per tile side
constexpr int kIn = kTile + 2;        // input pixels per tile side (the 3x3 kernel's reach)
constexpr int kPoints = kIn * kIn;    // transformed values per tile and channel

// F(4, 3) at the points 0, 1, -1, 2, -2 and infinity (Lavin and Gray, section 4.2).
constexpr float kBt[kIn][kIn] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                                 {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
constexpr float kAt[kTile][kIn] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};

// This thread's buffer of at least n elements, kept between calls (a fresh one of a few MB would
// come from mmap and fault its pages in on every call).
template <typename scalar_t>
scalar_t* thread_buffer(std::vector<scalar_t>& buffer, int64_t n) {
  if (static_cast<int64_t>(buffer.size()) < n) {
    buffer.resize(n);
  }
  return buffer.data();
}

// out = coef in: out[i][j] = sum_l coef[i][l] in[l][j], the first pass of a tile transform. It is
// inlined into the channel loops below, where coef is one of the constant matrices above: once the
// loops are unrolled its zero coefficients cost nothing.
template <int rows, int cols, typename scalar_t>
[[gnu::always_inline]] inline void left_product(const float (&coef)[rows][kIn], const scalar_t (&in)[kIn][cols],
                                                scalar_t (&out)[rows][cols]) {
#pragma GCC unroll 6
  for (int i = 0; i < rows; ++i) {
#pragma GCC unroll 6
    for (int j = 0; j < cols; ++j) {
      scalar_t s = 0;
#pragma GCC unroll 6
      for (int l = 0; l < kIn; ++l) {
        if (coef[i][l] != 0) {
          s += static_cast<scalar_t>(coef[i][l]) * in[l][j];
        }
      }
      out[i][j] = s;
    }
  }
}

// The second pass: sink(i, j, (in coef^T)[i][j]) = sink(i, j, sum_l in[i][l] coef[j][l]) for each
// entry, which the sink stores where it belongs.
template <int rows, int cols, typename scalar_t, typename Sink>
[[gnu::always_inline]] inline void right_product_transposed(const scalar_t (&in)[rows][kIn],
                                                            const float (&coef)[cols][kIn], Sink sink) {
#pragma GCC unroll 6
  for (int i = 0; i < rows; ++i) {
#pragma GCC unroll 6
    for (int j = 0; j < cols; ++j) {
      scalar_t s = 0;
#pragma GCC unroll 6
      for (int l = 0; l < kIn; ++l) {
        if (coef[j][l] != 0) {
          s += static_cast<scalar_t>(coef[j][l]) * in[i][l];
        }
      }
      sink(i, j, s);
    }
  }
}

// v[p * point_stride + c] = (B^T d_c B)[p] for the channels [0, C) of one tile, d given as the
// kPoints pixel rows (C contiguous values each; a row of zeros outside the map).
template <typename scalar_t>
void transform_tile(const scalar_t* const* pixel, int64_t channels, scalar_t* v, int64_t point_stride) {
#pragma omp simd
  for (int64_t c = 0; c < channels; ++c) {
    scalar_t d[kIn][kIn], t[kIn][kIn];
#pragma GCC unroll 36
    for (int p = 0; p < kPoints; ++p) {
      d[p / kIn][p % kIn] = pixel[p][c];
    }
    left_product(kBt, d, t);
    right_product_transposed(t, kBt, [&](int i, int j, scalar_t s) { v[(i * kIn + j) * point_stride + c] = s; });
  }
}

// out[i][j][k] = (A^T m_k A)[i][j] + bias[k], then ReLU when relu, for the output channels [0, K)
// of one tile (bias: K values, zeros for a convolution without one); m: the tile's kPoints products (K contiguous values each, point_stride apart).
template <bool relu, typename scalar_t>
void untransform_tile(const scalar_t* m, int64_t point_stride, int64_t channels_out, const scalar_t* bias,
                      scalar_t* const* out) {
#pragma omp simd
  for (int64_t k = 0; k < channels_out; ++k) {
    scalar_t q[kIn][kIn], t[kTile][kIn];
#pragma GCC unroll 36
    for (int p = 0; p < kPoints; ++p) {
      q[p / kIn][p % kIn] = m[p * point_stride + k];
    }
    left_product(kAt, q, t);
    right_product_transposed(t, kAt, [&](int i, int j, scalar_t s) {
      s += bias[k];
      if constexpr (relu) {
        s = std::max(s, scalar_t(0));  // (s < 0 ? 0 : s): NaN stays NaN, as in torch.relu
      }
      out[i * kTile + j][k] = s;
    });
  }
}

#if defined(__AVX512F__)
// rows x K block of c = a b for rows <= kRows rows of a ([*, depth], lda apart) and the K <= 32
// columns of b ([depth, *], ldb apart) that `mask` selects, summed over depth in order.
constexpr int kRows = 12;  // 24 accumulators of 16 floats, 2 registers of b, one broadcast
// Sums of kDepthBlock products in registers, added to the output in turn: a rounding error that
// grows with depth / kDepthBlock + kDepthBlock rather than with the depth (256-512 channels).
constexpr int64_t kDepthBlock = 64;

template <int rows>
inline void product_block(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t depth, __mmask16 mask0,
                          __mmask16 mask1, float* c, int64_t ldc, bool accumulate) {
  __m512 acc[rows][2];
#pragma GCC unroll 12
  for (int i = 0; i < rows; ++i) {
    acc[i][0] = _mm512_setzero_ps();
    acc[i][1] = _mm512_setzero_ps();
  }
  for (int64_t l = 0; l < depth; ++l) {
    const __m512 b0 = _mm512_maskz_loadu_ps(mask0, b + l * ldb);
    const __m512 b1 = _mm512_maskz_loadu_ps(mask1, b + l * ldb + 16);
#pragma GCC unroll 12
    for (int i = 0; i < rows; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i * lda + l]);
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
  if (accumulate) {
#pragma GCC unroll 12
    for (int i = 0; i < rows; ++i) {
      acc[i][0] = _mm512_add_ps(acc[i][0], _mm512_maskz_loadu_ps(mask0, c + i * ldc));
      acc[i][1] = _mm512_add_ps(acc[i][1], _mm512_maskz_loadu_ps(mask1, c + i * ldc + 16));
    }
  }
#pragma GCC unroll 12
  for (int i = 0; i < rows; ++i) {
    _mm512_mask_storeu_ps(c + i * ldc, mask0, acc[i][0]);
    _mm512_mask_storeu_ps(c + i * ldc + 16, mask1, acc[i][1]);
  }
}

template <int rows = kRows>
inline void product_rows(int64_t count, const float* a, int64_t lda, const float* b, int64_t ldb, int64_t depth,
                         __mmask16 mask0, __mmask16 mask1, float* c, int64_t ldc, bool accumulate) {
  if constexpr (rows > 0) {
    if (count == rows) {
      product_block<rows>(a, lda, b, ldb, depth, mask0, mask1, c, ldc, accumulate);
    } else {
      product_rows<rows - 1>(count, a, lda, b, ldb, depth, mask0, mask1, c, ldc, accumulate);
    }
  }
}

// c = a b for a [m, depth], b [depth, n], c [m, n], row-major with rows lda, ldb, ldc apart. MKL,
// which the BLAS products call, runs its AVX2 code on AMD processors (about 85 GFLOP/s a core on Zen 5,
// where this loop reaches ~2x that): the products are most of the convolution's time.
void matrix_product(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc, int64_t m,
                    int64_t depth, int64_t n) {
  for (int64_t j = 0; j < n; j += 32) {
    const int64_t width = std::min<int64_t>(32, n - j);
    const __mmask16 mask0 = width >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << width) - 1);
    const __mmask16 mask1 = width >= 32   ? __mmask16(0xFFFF)
                            : width <= 16 ? __mmask16(0)
                                          : __mmask16((1u << (width - 16)) - 1);
    // b's block of rows stays in L1 over a's rows; no depth (no input channels) writes zeros.
    for (int64_t l = 0; l == 0 || l < depth; l += kDepthBlock) {
      for (int64_t i = 0; i < m; i += kRows) {
        product_rows(std::min<int64_t>(kRows, m - i), a + i * lda + l, lda, b + l * ldb + j, ldb,
                     std::min<int64_t>(kDepthBlock, depth - l), mask0, mask1, c + i * ldc + j, ldc, l > 0);
      }
    }
  }
}
#endif

// Row stride for rows of n values: whole 64-byte lines, an odd number of them, so that the rows of
// a matrix spread over all of the L1 cache's sets (rows 1 KB apart, 256 floats, would share 4 of
// its 64 sets and evict each other in the products).
template <typename scalar_t>
int64_t padded_row(int64_t n) {
  constexpr int64_t per_line = 64 / sizeof(scalar_t);
  const int64_t lines = (n + per_line - 1) / per_line;
  return (lines % 2 == 0 ? lines + 1 : lines) * per_line;
}

// The transformed tiles or their products, [36, rows, n] as 36 matrices of rows row_stride apart.
template <typename scalar_t>
struct PointMatrices {
  scalar_t* data;
  int64_t point_stride, row_stride;
  scalar_t* row(int64_t p, int64_t i) const { return data + p * point_stride + i * row_stride; }
};

// Whether float32's products go to the BLAS (blas_gemm) rather than matrix_product: MKL runs AVX-512 code on
// Intel's cores, where it beats matrix_product, and AVX2 code on AMD's, where matrix_product runs
// ~2x faster. On an Intel Xeon (AVX-512 and AMX), the convolution alone at 2 threads, matrix_product
// -> MKL: 256 -> 256 channels at 50 x 76 6.3 -> 4.9 ms, 512 -> 512 at 25 x 38 7.7 -> 6.0 ms,
// 256 -> 256 at 200 x 304 107 -> 104 ms, 128 -> 128 at 100 x 152 6.7 -> 6.9 ms. ROIOPS_WINOGRAD_BLAS=1
// or 0 overrides the choice, so that the tests run both on any machine.
inline bool products_by_blas() { return intel_unless_overridden("ROIOPS_WINOGRAD_BLAS"); }

// The Fortran BLAS gemm (column-major, LP64 integers) that libtorch_cpu exports from the MKL or
// OpenBLAS it links, looked up at run time so that a torch build without it still loads roiops
// (the products then go through at::bmm). Called directly because at::bmm on these strided
// matrices makes a select view and an addmm per point: on an Intel Xeon, 35,000 views and 32 ms of
// ATen overhead per 800 x 1216 image in r50_fpn's Winograd convolutions, about 7% of their time.
template <typename scalar_t>
using BlasGemm = void (*)(const char*, const char*, const int*, const int*, const int*, const scalar_t*,
                          const scalar_t*, const int*, const scalar_t*, const int*, const scalar_t*, scalar_t*,
                          const int*);

template <typename scalar_t>
BlasGemm<scalar_t> blas_gemm() {
  static const BlasGemm<scalar_t> gemm = reinterpret_cast<BlasGemm<scalar_t>>(
      dlsym(RTLD_DEFAULT, std::is_same_v<scalar_t, float> ? "sgemm_" : "dgemm_"));
  return gemm;
}

// m[p] = v[p] u[p] ([count, C] x [C, K]) for the points p in [p_begin, p_end).
template <typename scalar_t>
void point_products(const PointMatrices<scalar_t>& v, const at::Tensor& u, const PointMatrices<scalar_t>& m,
                    int64_t count, int64_t p_begin, int64_t p_end, bool by_blas) {
  const int64_t channels = u.size(1), channels_out = u.size(2);
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (!by_blas) {
      for (int64_t p = p_begin; p < p_end; ++p) {
        matrix_product(v.row(p, 0), v.row_stride, u.const_data_ptr<float>() + p * u.stride(0), u.stride(1),
                       m.row(p, 0), m.row_stride, count, channels, channels_out);
      }
      return;
    }
  }
#endif
  const BlasGemm<scalar_t> gemm = blas_gemm<scalar_t>();
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  if (gemm != nullptr && channels > 0 && std::max({count, channels, channels_out, v.row_stride, m.row_stride,
                                                   u.stride(1)}) <= kIntMax) {
    // Row-major m = v u is column-major m^T = u^T v^T: the same buffers, the operands swapped.
    const int rows = static_cast<int>(count), depth = static_cast<int>(channels);
    const int cols = static_cast<int>(channels_out);
    const int ldv = static_cast<int>(v.row_stride), ldu = static_cast<int>(u.stride(1));
    const int ldm = static_cast<int>(m.row_stride);
    const scalar_t one = 1, zero = 0;
    for (int64_t p = p_begin; p < p_end; ++p) {
      gemm("N", "N", &cols, &rows, &depth, &one, u.const_data_ptr<scalar_t>() + p * u.stride(0), &ldu,
           v.row(p, 0), &ldv, &zero, m.row(p, 0), &ldm);
    }
    return;
  }
  const auto options = at::TensorOptions().dtype(u.scalar_type());
  at::Tensor products = at::from_blob(m.row(p_begin, 0), {p_end - p_begin, count, channels_out},
                                      {m.point_stride, m.row_stride, 1}, options);
  at::bmm_out(products,
              at::from_blob(v.row(p_begin, 0), {p_end - p_begin, count, channels}, {v.point_stride, v.row_stride, 1},
                            options),
              u.slice(0, p_begin, p_end));
}

template <typename scalar_t>
void winograd_conv3x3_kernel(const at::Tensor& x, const at::Tensor& u, const scalar_t* bias, bool relu,
                             at::Tensor& out) {
  const int64_t batch = x.size(0), channels = x.size(1), height = x.size(2), width = x.size(3);
  const int64_t channels_out = out.size(1);
  const int64_t tiles_y = (height + kTile - 1) / kTile, tiles_x = (width + kTile - 1) / kTile;
  const int64_t per_image = tiles_y * tiles_x, tiles = batch * per_image;
  const scalar_t* map = x.const_data_ptr<scalar_t>();
  scalar_t* result = out.mutable_data_ptr<scalar_t>();
  const std::vector<scalar_t> zeros(channels, scalar_t(0));
  const auto options = at::TensorOptions().dtype(x.scalar_type());

  // Image and top-left output pixel of tile t.
  const auto tile_origin = [&](int64_t t, int64_t* n, int64_t* y0, int64_t* x0) {
    *n = t / per_image;
    *y0 = (t % per_image) / tiles_x * kTile;
    *x0 = t % tiles_x * kTile;
  };
  // Tiles [t0, t0 + count) transformed into rows [0, count) of v, and rows [0, count) of the
  // products m transformed back into the output.
  const auto transform_tiles = [&](int64_t t0, int64_t count, const PointMatrices<scalar_t>& v) {
    for (int64_t i = 0; i < count; ++i) {
      int64_t n, y0, x0;
      tile_origin(t0 + i, &n, &y0, &x0);
      const scalar_t* pixel[kPoints];
      for (int p = 0; p < kPoints; ++p) {
        const int64_t r = y0 - 1 + p / kIn, c = x0 - 1 + p % kIn;  // padding 1: zeros outside
        pixel[p] = r >= 0 && r < height && c >= 0 && c < width ? map + ((n * height + r) * width + c) * channels
                                                               : zeros.data();
      }
      transform_tile(pixel, channels, v.row(0, i), v.point_stride);
    }
  };
  const auto untransform_tiles = [&](int64_t t0, int64_t count, const PointMatrices<scalar_t>& m) {
    thread_local std::vector<scalar_t> spill_buffer;
    scalar_t* spill = thread_buffer(spill_buffer, kTile * kTile * channels_out);  // outputs past the map's edge
    for (int64_t i = 0; i < count; ++i) {
      int64_t n, y0, x0;
      tile_origin(t0 + i, &n, &y0, &x0);
      scalar_t* pixel[kTile * kTile];
      for (int p = 0; p < kTile * kTile; ++p) {
        const int64_t r = y0 + p / kTile, c = x0 + p % kTile;
        pixel[p] = r < height && c < width ? result + ((n * height + r) * width + c) * channels_out
                                           : spill + p * channels_out;
      }
      if (relu) {
        untransform_tile<true>(m.row(0, i), m.point_stride, channels_out, bias, pixel);
      } else {
        untransform_tile<false>(m.row(0, i), m.point_stride, channels_out, bias, pixel);
      }
    }
  };

  const int64_t v_row = padded_row<scalar_t>(channels), m_row = padded_row<scalar_t>(channels_out);
  const bool by_blas = products_by_blas();
  // Tiles per chunk, a multiple of the products' 12-row blocks. Each chunk reads all of U (36
  // matrices [C, K]), so a chunk's rows must be enough to pay for that read: U of 256 -> 256
  // channels (9.4 MB) stays in the L3 cache from chunk to chunk and 48 tiles do; 512 or 1024
  // channels' U (38 MB, 151 MB) comes from memory each time, and chunks of 96 tiles run C4's
  // 1024-channel RPN convolution 1.8x and its res5 head's 512-channel ones 1.45-2.1x faster than
  // chunks that kept the transforms at 1.8 MB (12 and 24 tiles; AMD Zen 4, 2 threads).
  const int64_t chunk = std::max(channels, channels_out) > 256 ? 96 : 48;
  const bool whole_map_fits = kPoints * tiles * (v_row + m_row) * int64_t(sizeof(scalar_t)) <= (int64_t(64) << 20);
  if (tiles < 8 * chunk && channels * channels_out >= 128 * 128 && whole_map_fits) {
    // A small map with wide weights (the FPN's coarsest levels, ResNet's last stages, C4's RoI
    // heads): a few chunks would leave a thread idle and read all of U (9.4 MB for 256 -> 256
    // channels) for few tiles each. Here the three steps are passes over the whole map (its
    // transforms and products at most 64 MB), each split between the threads, the products by
    // point. With matrix_product both ways give the same sums.
    at::Tensor v_buffer = at::empty({kPoints * tiles * v_row}, options);
    at::Tensor m_buffer = at::empty({kPoints * tiles * m_row}, options);
    const PointMatrices<scalar_t> v{v_buffer.data_ptr<scalar_t>(), tiles * v_row, v_row};
    const PointMatrices<scalar_t> m{m_buffer.data_ptr<scalar_t>(), tiles * m_row, m_row};
    const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, channels));
    at::parallel_for(0, tiles, grain, [&](int64_t begin, int64_t end) {
      transform_tiles(begin, end - begin, {v.row(0, begin), v.point_stride, v_row});
    });
    at::parallel_for(0, kPoints, 1, [&](int64_t begin, int64_t end) {
      point_products(v, u, m, tiles, begin, end, by_blas);
    });
    at::parallel_for(0, tiles, grain, [&](int64_t begin, int64_t end) {
      untransform_tiles(begin, end - begin, {m.row(0, begin), m.point_stride, m_row});
    });
    return;
  }
  at::parallel_for(0, (tiles + chunk - 1) / chunk, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<scalar_t> v_buffer, m_buffer;
    const PointMatrices<scalar_t> v{thread_buffer(v_buffer, kPoints * chunk * v_row), chunk * v_row, v_row};
    const PointMatrices<scalar_t> m{thread_buffer(m_buffer, kPoints * chunk * m_row), chunk * m_row, m_row};
    for (int64_t index = begin; index < end; ++index) {
      const int64_t t0 = index * chunk, count = std::min(tiles, t0 + chunk) - t0;
      transform_tiles(t0, count, v);
      point_products(v, u, m, count, 0, kPoints, by_blas);
      untransform_tiles(t0, count, m);
    }
  });
}

// weight_winograd as the products read it: unit column stride and rows that start on 64-byte
// lines. A caller's transform usually is (ATen allocates on 64-byte boundaries), but an
// AOTInductor package's is not: torch 2.14 loads a package's constants into one malloc'd block
// (16-byte aligned) at 64-byte offsets, so every row of U straddles two lines, and the products,
// which load two vectors of U per 24 multiply-adds, ran 256 -> 256 channels at 100 x 152 in 58
// ms instead of 41 (AMD Zen 4, 2 threads). Such a U is copied into rows of a whole number of lines,
// once per call: 9.4 MB for 256 -> 256 channels, read again by every chunk of tiles.
at::Tensor product_ready(const at::Tensor& weight_winograd) {
  const int64_t line = 64 / static_cast<int64_t>(weight_winograd.element_size());
  const bool lined_up = reinterpret_cast<uintptr_t>(weight_winograd.const_data_ptr()) % 64 == 0 &&
                        weight_winograd.stride(1) % line == 0;
  // Rows of a width that is no whole number of lines cannot all start on one; they are read as
  // they are.
  if (weight_winograd.stride(2) == 1 && (lined_up || weight_winograd.size(2) % line != 0)) {
    return weight_winograd;
  }
  at::Tensor rows = at::empty(weight_winograd.sizes(), weight_winograd.options());  // ATen: 64-byte aligned
  rows.copy_(weight_winograd);
  return rows;
}

at::Tensor winograd_conv3x3_cpu(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& weight_winograd,
                                const std::optional<at::Tensor>& bias, bool relu) {
  check_winograd_conv3x3_args(input, weight, weight_winograd, bias);
  TORCH_CHECK_TYPE(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble,
                   "winograd_conv3x3: the CPU kernel takes float32 or float64, got ", input.scalar_type());
  const int64_t channels_out = weight.size(0);
  at::Tensor out = at::empty({input.size(0), channels_out, input.size(2), input.size(3)},
                             input.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (out.numel() == 0) {
    return out;
  }
  const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor u = product_ready(weight_winograd);
  const at::Tensor b = bias.has_value() ? bias->contiguous() : at::zeros({channels_out}, input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "winograd_conv3x3_cpu", [&] {
    winograd_conv3x3_kernel<scalar_t>(x, u, b.const_data_ptr<scalar_t>(), relu, out);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CPU, m) { m.impl("winograd_conv3x3", &winograd_conv3x3_cpu); }

}  // namespace cpu
}  // namespace roiops
