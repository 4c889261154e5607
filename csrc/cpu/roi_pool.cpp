// RoIPool (Girshick, Fast R-CNN) on the CPU: the max over each quantized bin, and its backward,
// which routes each bin's gradient to the pixel that was the max (argmax).
//
// The bins of every RoI are computed once (roi_pool_bin in roi_align_math.h), then:
// - channels_last: parallel over RoIs, the max runs over C-vectors (vectorized);
// - NCHW: parallel over (image, channel) planes, RoIs of that image innermost, so a plane is read
//   from memory once.
// The backward partitions the input gradient by (image, channel block): one writer per element and
// a fixed order, so the result does not depend on the thread count.
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
#include <tuple>
#include <vector>

#include "common/roi_align_math.h"
#include "cpu/roi_align_kernels.h"  // use_channels_last, channels_first_to_last

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
    TORCH_CHECK_VALUE(b >= acc_t(0) && b < static_cast<acc_t>(batch_size) &&
                          b == static_cast<acc_t>(static_cast<int64_t>(b)),
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

template <typename scalar_t>
void roi_pool_forward_nchw(const PoolRois& p, const scalar_t* input, int64_t batch_size, int64_t channels,
                           int64_t height, int64_t width, int64_t bins, scalar_t* out, int64_t* argmax) {
  at::parallel_for(0, batch_size * channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / channels, c = task % channels;
      const scalar_t* plane = input + task * height * width;
      for (int64_t j = p.offsets[n]; j < p.offsets[n + 1]; ++j) {
        const int64_t k = p.order[j];
        for (int64_t b = 0; b < bins; ++b) {
          const PoolBin& bin = p.bins[k * bins + b];
          scalar_t best = scalar_t(0);
          int64_t best_at = -1;
          if (!bin.empty()) {
            best_at = bin.h_start * width + bin.w_start;
            best = plane[best_at];
            for (int64_t h = bin.h_start; h < bin.h_end; ++h) {
              for (int64_t w = bin.w_start; w < bin.w_end; ++w) {
                const scalar_t v = plane[h * width + w];
                if (best == best && !(v <= best)) {  // v > best, or v is the first NaN
                  best = v;
                  best_at = h * width + w;
                }
              }
            }
          }
          out[(k * channels + c) * bins + b] = best;
          argmax[(k * channels + c) * bins + b] = best_at;
        }
      }
    }
  });
}

// The max and argmax of one bin over channels [c0, c0 + nc) of a channels_last image, into
// bv / bi. kFixed > 0: nc == kFixed, a compile-time width the compiler keeps in registers, so each
// pixel costs one pass over nc contiguous values and no loads/stores of the running maxima.
template <typename scalar_t, typename acc_t, int64_t kFixed>
inline void pool_bin_channels(const scalar_t* image, int64_t channels, int64_t width, const PoolBin& bin,
                              int64_t c0, int64_t nc_runtime, acc_t* bv_out, int32_t* bi_out) {
  constexpr int64_t kStore = kFixed > 0 ? kFixed : 1;
  const int64_t nc = kFixed > 0 ? kFixed : nc_runtime;
  acc_t bv_fixed[kStore];
  int32_t bi_fixed[kStore];
  acc_t* bv = kFixed > 0 ? bv_fixed : bv_out;
  int32_t* bi = kFixed > 0 ? bi_fixed : bi_out;
  const int32_t first = static_cast<int32_t>(bin.h_start * width + bin.w_start);
  const scalar_t* px = image + static_cast<int64_t>(first) * channels + c0;
#pragma omp simd
  for (int64_t c = 0; c < nc; ++c) {
    bv[c] = static_cast<acc_t>(px[c]);
    bi[c] = first;
  }
  for (int64_t h = bin.h_start; h < bin.h_end; ++h) {
    // The first pixel is compared with itself: a no-op (equal, or NaN already kept).
    for (int64_t w = bin.w_start; w < bin.w_end; ++w) {
      const int32_t at = static_cast<int32_t>(h * width + w);
      const scalar_t* q = image + static_cast<int64_t>(at) * channels + c0;
#pragma omp simd
      for (int64_t c = 0; c < nc; ++c) {
        const acc_t v = static_cast<acc_t>(q[c]);
        const bool take = bv[c] == bv[c] && !(v <= bv[c]);  // v > best, or v the first NaN
        bv[c] = take ? v : bv[c];
        bi[c] = take ? at : bi[c];
      }
    }
  }
  if constexpr (kFixed > 0) {
    for (int64_t c = 0; c < nc; ++c) {
      bv_out[c] = bv[c];
      bi_out[c] = bi[c];
    }
  }
}

// input: [N, H, W, C] in memory. Element (k, c, bin) of out and argmax is at k * C * bins +
// c * out_channel_stride + bin * out_bin_stride (channels_last: 1 and C; NCHW: bins and 1).
// Parallel over RoIs, taken in `visit` order (spatially sorted, so that the RoIs a thread pools in
// a row overlap and find much of their region in cache); per bin, channels in register-sized
// blocks, so every map element of the bin is read once and the running max stays in registers.
template <typename scalar_t>
void roi_pool_forward_channels_last(const PoolRois& p, const std::vector<int64_t>& visit, const scalar_t* input,
                                    int64_t channels, int64_t height, int64_t width, int64_t bins, scalar_t* out,
                                    int64_t* argmax, int64_t out_channel_stride, int64_t out_bin_stride) {
  using acc_t = at::opmath_type<scalar_t>;
  // 256 bytes of accumulators (4 AVX-512 registers), and as many for the indices.
  constexpr int64_t kBlock = 256 / static_cast<int64_t>(sizeof(acc_t));
  const int64_t num_rois = static_cast<int64_t>(visit.size());
  // Split the visiting order into runs of about equal work (pixels read), one run per thread:
  // RoI sizes vary by orders of magnitude, so equal RoI counts leave a thread idle.
  const int64_t runs = std::max<int64_t>(1, std::min<int64_t>(num_rois, at::get_num_threads()));
  std::vector<int64_t> run_start(runs + 1, num_rois);
  {
    std::vector<int64_t> work(num_rois + 1, 0);
    for (int64_t j = 0; j < num_rois; ++j) {
      int64_t w = bins;
      for (int64_t b = 0; b < bins; ++b) {
        const PoolBin& bin = p.bins[visit[j] * bins + b];
        w += bin.empty() ? 0 : (bin.h_end - bin.h_start) * (bin.w_end - bin.w_start);
      }
      work[j + 1] = work[j] + w;
    }
    int64_t j = 0;
    for (int64_t r = 0; r < runs; ++r) {
      while (j < num_rois && work[j] * runs < work[num_rois] * r) ++j;
      run_start[r] = j;
    }
  }
  at::parallel_for(0, runs, 1, [&](int64_t run_begin, int64_t run_end) {
    const int64_t begin = run_start[run_begin], end = run_start[run_end];
    std::vector<acc_t> best_v(channels);
    // Pixel indices fit in int32 for any map with < 2^31 pixels; int32 lanes keep the compare and
    // select loop the same width as the float values, so it vectorizes.
    std::vector<int32_t> best_i(channels);
    acc_t* bv = best_v.data();
    int32_t* bi = best_i.data();
    for (int64_t j = begin; j < end; ++j) {
      const int64_t k = visit[j];
      const scalar_t* image = input + p.batch[k] * height * width * channels;
      for (int64_t b = 0; b < bins; ++b) {
        const PoolBin& bin = p.bins[k * bins + b];
        scalar_t* o = out + k * channels * bins + b * out_bin_stride;
        int64_t* a = argmax + k * channels * bins + b * out_bin_stride;
        if (bin.empty()) {
          for (int64_t c = 0; c < channels; ++c) {
            o[c * out_channel_stride] = scalar_t(0);
            a[c * out_channel_stride] = -1;
          }
          continue;
        }
        int64_t c0 = 0;
        for (; c0 + kBlock <= channels; c0 += kBlock) {
          pool_bin_channels<scalar_t, acc_t, kBlock>(image, channels, width, bin, c0, kBlock, bv + c0, bi + c0);
        }
        if (c0 < channels) {
          pool_bin_channels<scalar_t, acc_t, 0>(image, channels, width, bin, c0, channels - c0, bv + c0, bi + c0);
        }
        if (out_channel_stride == 1) {
          for (int64_t c = 0; c < channels; ++c) {
            o[c] = static_cast<scalar_t>(bv[c]);
            a[c] = bi[c];
          }
        } else {
          for (int64_t c = 0; c < channels; ++c) {
            o[c * out_channel_stride] = static_cast<scalar_t>(bv[c]);
            a[c * out_channel_stride] = bi[c];
          }
        }
      }
    }
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
  TORCH_CHECK_VALUE(input_in.dim() == 4, "roi_pool: input must be [N, C, H, W], got ", input_in.sizes());
  TORCH_CHECK_VALUE(rois_in.dim() == 2 && rois_in.size(1) == 5, "roi_pool: rois must be [K, 5], got ",
                    rois_in.sizes());
  TORCH_CHECK_TYPE(rois_in.scalar_type() == input_in.scalar_type(), "roi_pool: rois and input dtypes differ");
  TORCH_CHECK_VALUE(pooled_height > 0 && pooled_width > 0, "roi_pool: output size must be positive");
  TORCH_CHECK_VALUE(spatial_scale > 0, "roi_pool: spatial_scale must be positive, got ", spatial_scale);
  const bool channels_last = use_channels_last(input_in);
  const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
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
    // Pixels the bins cover, per channel: when that is a large part of the map, one transposed
    // copy to channels_last and the vectorized kernel beat reading NCHW planes in place.
    int64_t covered = 0;
    for (const PoolBin& bin : p.bins) {
      covered += bin.empty() ? 0 : (bin.h_end - bin.h_start) * (bin.w_end - bin.w_start);
    }
    const std::vector<int64_t> visit = spatial_order(p, bins);
    if (channels_last) {
      roi_pool_forward_channels_last<scalar_t>(p, visit, input.const_data_ptr<scalar_t>(), channels, height, width, bins,
                                               out.mutable_data_ptr<scalar_t>(), argmax.mutable_data_ptr<int64_t>(),
                                               1, channels);
    } else if (2 * covered >= batch_size * height * width) {
      at::Tensor transposed = at::empty(input.sizes(), input.options().memory_format(at::MemoryFormat::ChannelsLast));
      channels_first_to_last<scalar_t, scalar_t>(input.const_data_ptr<scalar_t>(),
                                                 transposed.mutable_data_ptr<scalar_t>(), batch_size, channels,
                                                 height * width);
      roi_pool_forward_channels_last<scalar_t>(p, visit, transposed.const_data_ptr<scalar_t>(), channels, height, width,
                                               bins, out.mutable_data_ptr<scalar_t>(),
                                               argmax.mutable_data_ptr<int64_t>(), bins, 1);
    } else {
      roi_pool_forward_nchw<scalar_t>(p, input.const_data_ptr<scalar_t>(), batch_size, channels, height, width,
                                      bins, out.mutable_data_ptr<scalar_t>(), argmax.mutable_data_ptr<int64_t>());
    }
  });
  return {out, argmax};
}

at::Tensor roi_pool_backward_cpu(const at::Tensor& grad_in, const at::Tensor& rois_in, const at::Tensor& argmax_in,
                                 int64_t batch_size, int64_t channels, int64_t height, int64_t width,
                                 bool channels_last) {
  const int64_t num_rois = rois_in.size(0);
  TORCH_CHECK_VALUE(rois_in.dim() == 2 && rois_in.size(1) == 5, "roi_pool_backward: rois must be [K, 5]");
  TORCH_CHECK_VALUE(grad_in.dim() == 4 && grad_in.size(0) == num_rois && grad_in.size(1) == channels &&
                        argmax_in.sizes() == grad_in.sizes(),
                    "roi_pool_backward: grad and argmax must both be [K, C, PH, PW], got ", grad_in.sizes(),
                    " and ", argmax_in.sizes());
  TORCH_CHECK_TYPE(argmax_in.scalar_type() == at::kLong, "roi_pool_backward: argmax must be int64");
  const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::ScalarType dtype = grad_in.scalar_type();
  const bool half = dtype == at::kHalf || dtype == at::kBFloat16;
  // at::empty + zero_, not at::zeros: at::zeros ignores the memory format.
  at::Tensor grad_input = at::empty({batch_size, channels, height, width},
                                    grad_in.options().dtype(half ? at::kFloat : dtype).memory_format(format))
                              .zero_();
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
