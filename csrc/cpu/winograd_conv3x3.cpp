// A 3x3 convolution (stride 1, padding 1, optional bias and ReLU) on the CPU by Winograd's minimal
// filtering F(4x4, 3x3) (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks",
// 2016): every 4x4 block of output pixels (a tile) comes from the 6x6 input pixels around it as
//   Y = A^T [ sum_c (G g_kc G^T) . (B^T d_c B) ] A,
// 36 products per input-output channel pair where the direct convolution takes 144, so the work
// becomes 36 matrix products [tiles, C] x [C, K] with 4x fewer multiply-adds than the direct
// convolution's. The kernels' transforms U = G g G^T are computed once, by the caller
// (roiops.winograd_weight, in float64); this file transforms the input tiles (B^T d B), runs the
// 36 products (at::bmm_out, i.e. the BLAS), and transforms back (A^T m A) with bias and ReLU.
//
// Tiles are processed in chunks of a few dozen, each chunk by one thread from its input transform
// to its output, so that the chunk's transformed tiles and products ([36, tiles, C] and [36,
// tiles, K], about 2.4 MB each for 64 tiles of 256 channels) stay in the caches between the three
// steps instead of making three passes over buffers ten times the feature map's size. The chunks
// are fixed by the tile count, not the thread count, so the result does not depend on it.
//
// Accuracy: the transforms' coefficients (up to 8 in A, 5 in B, 1/24 in G) round more than the
// direct sum's 9C products; against float64, the maximum error on 256 -> 256 channels, weights
// of std 0.02 and unit inputs is 3-5e-5 (the direct convolution of oneDNN: 0.6-1.1e-5), relative
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

#include <algorithm>
#include <optional>
#include <vector>

#include "common/checks.h"

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
#pragma GCC unroll 6
    for (int i = 0; i < kIn; ++i) {
#pragma GCC unroll 6
      for (int j = 0; j < kIn; ++j) {
        scalar_t s = 0;
#pragma GCC unroll 6
        for (int l = 0; l < kIn; ++l) {
          if (kBt[i][l] != 0) {  // constant after unrolling: the zero coefficients cost nothing
            s += static_cast<scalar_t>(kBt[i][l]) * d[l][j];
          }
        }
        t[i][j] = s;
      }
    }
#pragma GCC unroll 6
    for (int i = 0; i < kIn; ++i) {
#pragma GCC unroll 6
      for (int j = 0; j < kIn; ++j) {
        scalar_t s = 0;
#pragma GCC unroll 6
        for (int l = 0; l < kIn; ++l) {
          if (kBt[j][l] != 0) {
            s += static_cast<scalar_t>(kBt[j][l]) * t[i][l];
          }
        }
        v[(i * kIn + j) * point_stride + c] = s;
      }
    }
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
#pragma GCC unroll 4
    for (int i = 0; i < kTile; ++i) {
#pragma GCC unroll 6
      for (int j = 0; j < kIn; ++j) {
        scalar_t s = 0;
#pragma GCC unroll 6
        for (int l = 0; l < kIn; ++l) {
          if (kAt[i][l] != 0) {
            s += static_cast<scalar_t>(kAt[i][l]) * q[l][j];
          }
        }
        t[i][j] = s;
      }
    }
#pragma GCC unroll 4
    for (int i = 0; i < kTile; ++i) {
#pragma GCC unroll 4
      for (int j = 0; j < kTile; ++j) {
        scalar_t s = 0;
#pragma GCC unroll 6
        for (int l = 0; l < kIn; ++l) {
          if (kAt[j][l] != 0) {
            s += static_cast<scalar_t>(kAt[j][l]) * t[i][l];
          }
        }
        s += bias[k];
        if constexpr (relu) {
          s = std::max(s, scalar_t(0));  // (s < 0 ? 0 : s): NaN stays NaN, as in torch.relu
        }
        out[i * kTile + j][k] = s;
      }
    }
  }
}

template <typename scalar_t>
void winograd_conv3x3_kernel(const at::Tensor& x, const at::Tensor& weight_winograd, const scalar_t* bias, bool relu,
                             at::Tensor& out) {
  const int64_t batch = x.size(0), channels = x.size(1), height = x.size(2), width = x.size(3);
  const int64_t channels_out = out.size(1);
  const int64_t tiles_y = (height + kTile - 1) / kTile, tiles_x = (width + kTile - 1) / kTile;
  const int64_t per_image = tiles_y * tiles_x, tiles = batch * per_image;
  // 64 tiles of 256 channels per chunk: 2.4 MB of float32 transforms each way.
  const int64_t chunk = std::clamp<int64_t>(64 * 256 / std::max<int64_t>(1, std::max(channels, channels_out)), 4, 64);
  const scalar_t* map = x.const_data_ptr<scalar_t>();
  scalar_t* result = out.mutable_data_ptr<scalar_t>();
  const std::vector<scalar_t> zeros(channels, scalar_t(0));
  at::parallel_for(0, (tiles + chunk - 1) / chunk, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<scalar_t> v_buffer, m_buffer, spill_buffer;
    scalar_t* v = thread_buffer(v_buffer, kPoints * chunk * channels);      // [36, chunk, C]
    scalar_t* m = thread_buffer(m_buffer, kPoints * chunk * channels_out);  // [36, chunk, K]
    scalar_t* spill = thread_buffer(spill_buffer, kTile * kTile * channels_out);  // outputs past the map's edge
    for (int64_t index = begin; index < end; ++index) {
      const int64_t t0 = index * chunk, count = std::min(tiles, t0 + chunk) - t0;
      const auto tile_origin = [&](int64_t t, int64_t* n, int64_t* y0, int64_t* x0) {
        *n = t / per_image;
        *y0 = (t % per_image) / tiles_x * kTile;
        *x0 = t % tiles_x * kTile;
      };
      for (int64_t i = 0; i < count; ++i) {
        int64_t n, y0, x0;
        tile_origin(t0 + i, &n, &y0, &x0);
        const scalar_t* pixel[kPoints];
        for (int p = 0; p < kPoints; ++p) {
          const int64_t r = y0 - 1 + p / kIn, c = x0 - 1 + p % kIn;  // padding 1: zeros outside
          pixel[p] = r >= 0 && r < height && c >= 0 && c < width ? map + ((n * height + r) * width + c) * channels
                                                                 : zeros.data();
        }
        transform_tile(pixel, channels, v + i * channels, chunk * channels);
      }
      {
        const auto options = at::TensorOptions().dtype(x.scalar_type());
        at::Tensor products =
            at::from_blob(m, {kPoints, count, channels_out}, {chunk * channels_out, channels_out, 1}, options);
        at::bmm_out(products, at::from_blob(v, {kPoints, count, channels}, {chunk * channels, channels, 1}, options),
                    weight_winograd);
      }
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
          untransform_tile<true>(m + i * channels_out, chunk * channels_out, channels_out, bias, pixel);
        } else {
          untransform_tile<false>(m + i * channels_out, chunk * channels_out, channels_out, bias, pixel);
        }
      }
    }
  });
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
  const at::Tensor u = weight_winograd.contiguous();
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
