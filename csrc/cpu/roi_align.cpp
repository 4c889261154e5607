// RoIAlign (He et al., Mask R-CNN) on the CPU: forward and backward to the maps, for one map
// (roi_align) and, through the same drivers, an FPN pyramid (multi_scale_roi_align.cpp). The
// backward to the box coordinates is in roi_align_box_grad.cpp.
//
// Plan: the taps of every RoI are computed once (roi_align_taps.h); the kernels only multiply and
// add over channels:
// - channels_last: parallel over RoIs; each tap reads 4 contiguous runs of C values and the inner
//   loop over C is vectorized.
// - NCHW: parallel over (level, image, block of 16 float channels); a task copies the map rows its
//   RoIs read of its channel planes into a small channels_last scratch (one cache line per pixel)
//   and runs the same vectorized loops on it, so the planes are read once, front to back, and
//   no full transposed copy of the maps is made.
// Backward kernels partition the gradient of the input by (level, image, channel block): every
// element has one writer and a fixed summation order, so results do not depend on the number of
// threads and no atomics are needed.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <vector>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "common/checks.h"
#include "common/memory_format.h"
#include "cpu/roi_align.h"
#include "cpu/roi_align_taps.h"
#include "cpu/vectorized_layout.h"

namespace roiops {
namespace cpu {
namespace {

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

}  // namespace

at::Tensor roi_align_forward_levels_cpu(const char* op, const std::vector<at::Tensor>& features,
                                        const at::Tensor& rois_in, const std::vector<double>& spatial_scales,
                                        const int64_t* levels, int64_t pooled_height, int64_t pooled_width,
                                        int64_t sampling_ratio, bool aligned) {
  check_roi_align_args(op, features, spatial_scales, rois_in, pooled_height, pooled_width);
  const at::Tensor& first = features[0];
  const bool channels_last = use_channels_last(first);
  const auto format = memory_format_for(channels_last);
  const int64_t batch_size = first.size(0), channels = first.size(1);
  std::vector<at::Tensor> inputs;
  std::vector<int64_t> heights, widths;
  for (const at::Tensor& f : features) {
    inputs.push_back(f.contiguous(format));
    heights.push_back(f.size(2));
    widths.push_back(f.size(3));
  }
  const std::vector<LevelShape> shapes = level_shapes(heights, widths, spatial_scales);
  const at::Tensor rois = rois_in.contiguous();
  const int64_t num_rois = rois.size(0);
  at::Tensor out = at::empty({num_rois, channels, pooled_height, pooled_width},
                             first.options().memory_format(format));
  if (num_rois == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, first.scalar_type(), "roi_align_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto taps = build_roi_taps<scalar_t, acc_t>(op, rois, levels, shapes, batch_size, pooled_height,
                                                      pooled_width, sampling_ratio, aligned);
    if (out.numel() == 0) {
      return;
    }
    std::vector<const scalar_t*> ptrs;
    for (const at::Tensor& f : inputs) {
      ptrs.push_back(f.const_data_ptr<scalar_t>());
    }
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    if (channels_last) {
      roi_align_forward_channels_last<scalar_t, acc_t>(taps, ptrs, shapes, channels, pooled_height,
                                                       pooled_width, o, 1, channels);
    } else {
      roi_align_forward_nchw<scalar_t, acc_t>(taps, ptrs, shapes, batch_size, channels, pooled_height,
                                              pooled_width, o);
    }
  });
  return out;
}

std::vector<at::Tensor> roi_align_backward_levels_cpu(
    const char* op, const at::Tensor& grad_in, const at::Tensor& rois_in, const std::vector<double>& spatial_scales,
    const int64_t* levels, int64_t batch_size, int64_t channels, const std::vector<int64_t>& heights,
    const std::vector<int64_t>& widths, int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
    bool aligned, bool channels_last) {
  check_pooled_size(op, pooled_height, pooled_width);
  check_rois(op, rois_in, grad_in);
  const int64_t num_rois = rois_in.size(0);
  check_pooled_grad(op, grad_in, rois_in, num_rois, channels, pooled_height, pooled_width);
  check_spatial_scales(op, spatial_scales);
  const std::vector<LevelShape> shapes = level_shapes(heights, widths, spatial_scales);
  const auto format = memory_format_for(channels_last);
  const at::ScalarType dtype = grad_in.scalar_type();
  const bool half = dtype == at::kHalf || dtype == at::kBFloat16;
  const at::ScalarType acc_dtype = half ? at::kFloat : dtype;
  std::vector<at::Tensor> grads;
  auto make = [&](int64_t l, at::ScalarType t) {
    return at::empty({batch_size, channels, heights[l], widths[l]}, grad_in.options().dtype(t).memory_format(format));
  };
  for (size_t l = 0; l < heights.size(); ++l) {
    grads.push_back(make(l, dtype));
  }
  if (num_rois == 0 || channels == 0) {
    for (at::Tensor& g : grads) {
      g.zero_();
    }
    return grads;
  }
  const at::Tensor rois = rois_in.contiguous();
  const at::Tensor grad = grad_in.contiguous(format);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "roi_align_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto taps = build_roi_taps<scalar_t, acc_t>(op, rois, levels, shapes, batch_size, pooled_height,
                                                      pooled_width, sampling_ratio, aligned);
    if (!channels_last) {
      // Writes every element of the result, accumulating in acc_t internally.
      std::vector<scalar_t*> ptrs;
      for (at::Tensor& g : grads) {
        ptrs.push_back(g.mutable_data_ptr<scalar_t>());
      }
      roi_align_backward_nchw<scalar_t, acc_t>(taps, grad.const_data_ptr<scalar_t>(), ptrs, shapes, batch_size,
                                               channels, pooled_height, pooled_width);
      return;
    }
    // channels_last: accumulates into a zero-filled buffer, the result itself unless the dtype is a
    // half type (then float32, rounded once at the end). at::empty (at::zeros drops the memory
    // format), then zero_streaming.
    std::vector<at::Tensor> buffers;
    std::vector<acc_t*> ptrs;
    for (size_t l = 0; l < grads.size(); ++l) {
      buffers.push_back(half ? make(l, acc_dtype) : grads[l]);
      zero_streaming(buffers.back().mutable_data_ptr<acc_t>(), buffers.back().numel());
      ptrs.push_back(buffers.back().mutable_data_ptr<acc_t>());
    }
    roi_align_backward_channels_last<scalar_t, acc_t>(taps, grad.const_data_ptr<scalar_t>(), 1, channels, ptrs,
                                                      shapes, batch_size, channels, pooled_height, pooled_width);
    if (half) {
      for (size_t l = 0; l < grads.size(); ++l) {
        grads[l].copy_(buffers[l]);
      }
    }
  });
  return grads;
}

namespace {

at::Tensor roi_align_forward_cpu(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                 int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                 bool aligned) {
  return roi_align_forward_levels_cpu("roi_align", {input}, rois, {spatial_scale}, nullptr, pooled_height,
                                      pooled_width, sampling_ratio, aligned);
}

at::Tensor roi_align_backward_cpu(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                  int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                  int64_t channels, int64_t height, int64_t width, int64_t sampling_ratio,
                                  bool aligned, bool channels_last) {
  return roi_align_backward_levels_cpu("roi_align_backward", grad, rois, {spatial_scale}, nullptr, batch_size,
                                       channels, {height}, {width}, pooled_height, pooled_width,
                                       sampling_ratio, aligned, channels_last)[0];
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CPU, m) {
  m.impl("roi_align", &roi_align_forward_cpu);
  m.impl("roi_align_backward", &roi_align_backward_cpu);
}

}  // namespace cpu
}  // namespace roiops
