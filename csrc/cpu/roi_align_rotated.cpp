// RoIAlignRotated on the CPU: forward and backward to the input map.
//
// Plan: the taps of every sample of every RoI (four pixel indices and bilinear weights, from
// common/roi_align_rotated_math.h) are computed once per RoI; the kernels then only multiply and
// add over channels, on a channels_last view where each tap reads a contiguous run of C values
// (the loop the compiler vectorizes). An NCHW input is first copied to channels_last (one pass over
// the map; rotated samples read scattered pixels, which an NCHW plane serves one channel at a
// time).
// - forward: parallel over RoIs; each output element has one writer.
// - backward: the gradient of the input is partitioned by (image, block of channels); a task walks
//   every RoI of its image in index order and adds into its own channels only. Every element has
//   one writer and a fixed summation order: results do not depend on the thread count, no atomics.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "common/rotated_checks.h"
#include "common/memory_format.h"
#include "common/roi_align_rotated_math.h"

namespace roiops {
namespace cpu {
namespace {

// Below this many (RoI, channel, bin) outputs a kernel runs on the calling thread.
constexpr int64_t kSerialWork = 16384;

// The non-zero taps of one RoI: bin b's samples are taps[begin[b] .. begin[b + 1]).
template <typename acc_t>
struct RotatedRoiTaps {
  int64_t batch = 0;
  acc_t inv_count = 1;
  std::vector<int32_t> begin;
  std::vector<RotatedTaps<acc_t>> taps;
};

// Taps of every RoI (rois: [K, 6] contiguous). Raises a ValueError naming the first RoI whose
// batch index is not an integer in [0, batch_size).
template <typename scalar_t, typename acc_t>
std::vector<RotatedRoiTaps<acc_t>> build_rotated_taps(const char* op, const at::Tensor& rois, int64_t batch_size,
                                                       int64_t height, int64_t width, double spatial_scale,
                                                       int64_t pooled_height, int64_t pooled_width,
                                                       int64_t sampling_ratio, bool aligned) {
  const int64_t num_rois = rois.size(0);
  const scalar_t* r = rois.const_data_ptr<scalar_t>();
  const int64_t bins = pooled_height * pooled_width;
  std::vector<RotatedRoiTaps<acc_t>> all(num_rois);
  std::atomic<int64_t> first_bad{num_rois};
  at::parallel_for(0, num_rois, 16, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const scalar_t* roi = r + 6 * k;
      RotatedRoiTaps<acc_t>& t = all[k];
      t.begin.assign(bins + 1, 0);
      const acc_t b = static_cast<acc_t>(roi[0]);
      if (!is_batch_index(b, batch_size)) {
        int64_t seen = first_bad.load();
        while (k < seen && !first_bad.compare_exchange_weak(seen, k)) {
        }
        continue;
      }
      t.batch = static_cast<int64_t>(b);
      const RotatedRoi<acc_t> g = make_rotated_roi(
          static_cast<acc_t>(roi[1]), static_cast<acc_t>(roi[2]), static_cast<acc_t>(roi[3]),
          static_cast<acc_t>(roi[4]), static_cast<acc_t>(roi[5]), static_cast<acc_t>(spatial_scale), pooled_height,
          pooled_width, sampling_ratio, aligned);
      t.inv_count = roi_align_inv_count(g.ay, g.ax);
      t.taps.reserve(bins * g.ay.grid * g.ax.grid);
      for (int64_t ph = 0; ph < pooled_height; ++ph) {
        for (int64_t pw = 0; pw < pooled_width; ++pw) {
          t.begin[ph * pooled_width + pw] = static_cast<int32_t>(t.taps.size());
          for (int64_t iy = 0; iy < g.ay.grid; ++iy) {
            for (int64_t ix = 0; ix < g.ax.grid; ++ix) {
              acc_t y, x;
              rotated_sample_point(g, ph, pw, iy, ix, &y, &x);
              const RotatedTaps<acc_t> s = rotated_sample_taps(y, x, height, width);
              if (s.weight[0] != acc_t(0) || s.weight[1] != acc_t(0) || s.weight[2] != acc_t(0) ||
                  s.weight[3] != acc_t(0)) {
                t.taps.push_back(s);
              }
            }
          }
        }
      }
      t.begin[bins] = static_cast<int32_t>(t.taps.size());
    }
  });
  const int64_t bad = first_bad.load();
  if (bad < num_rois) {
    TORCH_CHECK_VALUE(false, op, ": rois[", bad, ", 0] (the batch index) must be an integer in [0, ", batch_size,
                      "), got ", static_cast<double>(r[6 * bad]));
  }
  return all;
}

// input: [N, C, H, W] channels_last in memory; out element (k, c, bin) at k * C * bins +
// c * out_channel_stride + bin * out_bin_stride.
template <typename scalar_t, typename acc_t>
void forward_kernel(const std::vector<RotatedRoiTaps<acc_t>>& all, const scalar_t* input, int64_t channels,
                    int64_t height, int64_t width, int64_t bins, scalar_t* out, int64_t out_channel_stride,
                    int64_t out_bin_stride) {
  const int64_t num_rois = static_cast<int64_t>(all.size());
  // Small problems run on the calling thread: waking the pool costs more than they do.
  const int64_t grain = std::max<int64_t>(1, kSerialWork / std::max<int64_t>(1, channels * bins));
  at::parallel_for(0, num_rois, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(channels);
    acc_t* a = acc.data();
    for (int64_t k = begin; k < end; ++k) {
      const RotatedRoiTaps<acc_t>& t = all[k];
      const scalar_t* image = input + t.batch * height * width * channels;
      scalar_t* out_roi = out + k * channels * bins;
      for (int64_t bin = 0; bin < bins; ++bin) {
        std::fill(a, a + channels, acc_t(0));
        for (int32_t j = t.begin[bin]; j < t.begin[bin + 1]; ++j) {
          const RotatedTaps<acc_t>& s = t.taps[j];
          const scalar_t* p0 = image + s.index[0] * channels;
          const scalar_t* p1 = image + s.index[1] * channels;
          const scalar_t* p2 = image + s.index[2] * channels;
          const scalar_t* p3 = image + s.index[3] * channels;
          const acc_t w0 = s.weight[0], w1 = s.weight[1], w2 = s.weight[2], w3 = s.weight[3];
#pragma omp simd
          for (int64_t c = 0; c < channels; ++c) {
            a[c] += w0 * static_cast<acc_t>(p0[c]) + w1 * static_cast<acc_t>(p1[c]) +
                    w2 * static_cast<acc_t>(p2[c]) + w3 * static_cast<acc_t>(p3[c]);
          }
        }
        scalar_t* o = out_roi + bin * out_bin_stride;
        const acc_t inv = t.inv_count;
        if (out_channel_stride == 1) {
#pragma omp simd
          for (int64_t c = 0; c < channels; ++c) {
            o[c] = static_cast<scalar_t>(a[c] * inv);
          }
        } else {
          for (int64_t c = 0; c < channels; ++c) {
            o[c * out_channel_stride] = static_cast<scalar_t>(a[c] * inv);
          }
        }
      }
    }
  });
}

at::Tensor roi_align_rotated_forward_cpu(const at::Tensor& input, const at::Tensor& rois_in, double spatial_scale,
                                         int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                         bool aligned) {
  const char* op = "roi_align_rotated";
  TORCH_CHECK_VALUE(input.dim() == 4, op, ": input must be [N, C, H, W], got ", input.sizes());
  check_roi_align_rotated_args(op, rois_in, input, spatial_scale, pooled_height, pooled_width);
  const int64_t num_rois = rois_in.size(0), channels = input.size(1);
  const int64_t height = input.size(2), width = input.size(3);
  const bool channels_last = use_channels_last(input);
  at::Tensor out = at::empty({num_rois, channels, pooled_height, pooled_width},
                             input.options().memory_format(memory_format_for(channels_last)));
  if (out.numel() == 0) {
    return out;
  }
  const at::Tensor rois = rois_in.contiguous();
  const at::Tensor map = input.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t bins = pooled_height * pooled_width;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align_rotated_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto all = build_rotated_taps<scalar_t, acc_t>(op, rois, input.size(0), height, width, spatial_scale,
                                                          pooled_height, pooled_width, sampling_ratio, aligned);
    forward_kernel<scalar_t, acc_t>(all, map.const_data_ptr<scalar_t>(), channels, height, width, bins,
                                    out.mutable_data_ptr<scalar_t>(), channels_last ? 1 : bins,
                                    channels_last ? channels : 1);
  });
  return out;
}

// grad_cl: [K, C, PH, PW] channels_last in memory (bin-major, channels contiguous); buffer:
// [N, H, W, C] of acc_t, zeroed.
template <typename scalar_t, typename acc_t>
void backward_kernel(const std::vector<RotatedRoiTaps<acc_t>>& all, const scalar_t* grad_cl, int64_t batch_size,
                     int64_t channels, int64_t height, int64_t width, int64_t bins, acc_t* buffer) {
  const int64_t num_rois = static_cast<int64_t>(all.size());
  // RoIs of each image, in index order.
  std::vector<int64_t> offsets(batch_size + 1, 0), order(num_rois);
  for (const auto& t : all) {
    ++offsets[t.batch + 1];
  }
  for (int64_t b = 0; b < batch_size; ++b) {
    offsets[b + 1] += offsets[b];
  }
  std::vector<int64_t> fill(offsets.begin(), offsets.end() - 1);
  for (int64_t k = 0; k < num_rois; ++k) {
    order[fill[all[k].batch]++] = k;
  }
  // One cache line of channels per task, so no two tasks write the same line.
  const int64_t block = std::min<int64_t>(64 / sizeof(acc_t), channels);
  const int64_t blocks = (channels + block - 1) / block;
  const int64_t tasks = batch_size * blocks;
  const int64_t grain = num_rois * bins * channels < kSerialWork ? std::max<int64_t>(tasks, 1) : 1;
  at::parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> g(block);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t image = task / blocks;
      const int64_t c0 = (task % blocks) * block;
      const int64_t nc = std::min(block, channels - c0);
      acc_t* dst = buffer + image * height * width * channels + c0;
      for (int64_t j = offsets[image]; j < offsets[image + 1]; ++j) {
        const int64_t k = order[j];
        const RotatedRoiTaps<acc_t>& t = all[k];
        for (int64_t bin = 0; bin < bins; ++bin) {
          if (t.begin[bin] == t.begin[bin + 1]) {
            continue;
          }
          const scalar_t* src = grad_cl + (k * bins + bin) * channels + c0;
          for (int64_t c = 0; c < nc; ++c) {
            g[c] = static_cast<acc_t>(src[c]) * t.inv_count;
          }
          for (int32_t s = t.begin[bin]; s < t.begin[bin + 1]; ++s) {
            const RotatedTaps<acc_t>& tap = t.taps[s];
            for (int q = 0; q < 4; ++q) {
              acc_t* d = dst + tap.index[q] * channels;
              const acc_t w = tap.weight[q];
#pragma omp simd
              for (int64_t c = 0; c < nc; ++c) {
                d[c] += w * g[c];
              }
            }
          }
        }
      }
    }
  });
}

at::Tensor roi_align_rotated_backward_cpu(const at::Tensor& grad, const at::Tensor& rois_in, double spatial_scale,
                                          int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                          int64_t channels, int64_t height, int64_t width, int64_t sampling_ratio,
                                          bool aligned, bool channels_last) {
  const char* op = "roi_align_rotated_backward";
  check_roi_align_rotated_args(op, rois_in, grad, spatial_scale, pooled_height, pooled_width);
  check_pooled_grad(op, grad, grad, rois_in.size(0), channels, pooled_height, pooled_width);
  TORCH_CHECK_VALUE(batch_size >= 0 && channels >= 0 && height >= 0 && width >= 0, op,
                    ": the input shape must be non-negative");
  const auto options = grad.options().memory_format(at::MemoryFormat::ChannelsLast);
  at::Tensor grad_input;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "roi_align_rotated_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    // Accumulate in acc_t (float32 for the half types), channels_last.
    // at::zeros ignores a memory format in the options: empty, then zero.
    at::Tensor buffer = at::empty({batch_size, channels, height, width},
                                  options.dtype(c10::CppTypeToScalarType<acc_t>::value));
    buffer.zero_();
    if (buffer.numel() > 0 && rois_in.size(0) > 0) {
      const at::Tensor rois = rois_in.contiguous();
      const at::Tensor grad_cl = grad.contiguous(at::MemoryFormat::ChannelsLast);
      const auto all = build_rotated_taps<scalar_t, acc_t>(op, rois, batch_size, height, width, spatial_scale,
                                                            pooled_height, pooled_width, sampling_ratio, aligned);
      backward_kernel<scalar_t, acc_t>(all, grad_cl.const_data_ptr<scalar_t>(), batch_size, channels, height, width,
                                       pooled_height * pooled_width, buffer.mutable_data_ptr<acc_t>());
    }
    grad_input = buffer.to(grad.scalar_type());
  });
  return grad_input.contiguous(memory_format_for(channels_last));
}

}  // namespace
}  // namespace cpu

TORCH_LIBRARY_IMPL(roiops, CPU, m) {
  m.impl("roi_align_rotated", &cpu::roi_align_rotated_forward_cpu);
  m.impl("roi_align_rotated_backward", &cpu::roi_align_rotated_backward_cpu);
}

}  // namespace roiops
