// RoIAlignRotated on the CPU: forward and backward to the input map.
//
// Plan: the taps of every sample of every RoI (the first of its four bilinear pixels, the steps to
// the other three, and the four weights, from common/roi_align_rotated_math.h) are computed once
// per RoI; the kernels then only multiply and add over channels, as RoIAlign's (roi_align.cpp):
// - forward, channels_last: parallel over RoIs in spatial order; every tap reads 4 contiguous runs
//   of C values of the input in place.
// - forward, NCHW: parallel over (image, block of 16 float channels); a task copies the map rows
//   its RoIs read of its channel planes into a pixel-major scratch (one cache line per pixel, by
//   register transposes, so the planes are read once, front to back), pools every RoI of that
//   image from it, and writes each RoI's block of the output as one contiguous run.
// - backward: parallel over (image, block of 32 channels); a task accumulates into a pixel-major
//   scratch (read through the gradient's strides) and writes the block of the input gradient once,
//   in the requested memory format.
// Every output element has one writer and a fixed summation order: results do not depend on the
// thread count, and the backward needs no atomics.

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
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "common/memory_format.h"
#include "common/roi_align_rotated_math.h"
#include "common/rotated_checks.h"
#include "cpu/run_tasks.h"
#include "cpu/vectorized_layout.h"

namespace roiops {
namespace cpu {
namespace {

// Below this many (RoI, channel, bin) outputs a kernel runs on the calling thread: waking the
// thread pool costs more than the work.
constexpr int64_t kSerialWork = 16384;

// One sample that lands on the map: its four bilinear pixels are index, index + dx,
// index + dy * width and index + dy * width + dx (flat row * width + column). dx, dy are 0 where
// the sample sits on the last column or row (both pixels of that axis are the same one, the
// second with weight 0), else 1. 32 bytes in float32 (the four corner indices took 48): the NCHW
// forward reads every tap once per channel block, so their size is memory traffic.
template <typename acc_t>
struct PackedTap {
  int64_t index;
  int32_t dx, dy;
  acc_t weight[4];  // of index, + dx, + dy * width, + dy * width + dx
};

// The taps of one RoI: bin b's samples are taps[begin[b] .. begin[b + 1]).
template <typename acc_t>
struct RotatedRoiTaps {
  int64_t batch = 0;
  uint64_t key = 0;  // Z-order (Morton) code of the RoI centre in 8-pixel cells: the visiting order
  acc_t inv_count = 1;
  std::vector<int32_t> begin;
  std::vector<PackedTap<acc_t>> taps;
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
      const double cy = std::min(std::max(static_cast<double>(g.cy), 0.0), static_cast<double>(height));
      const double cx = std::min(std::max(static_cast<double>(g.cx), 0.0), static_cast<double>(width));
      const uint64_t qy = static_cast<uint64_t>(cy) / 8, qx = static_cast<uint64_t>(cx) / 8;
      for (int bit = 0; bit < 28; ++bit) {
        t.key |= ((qy >> bit) & 1u) << (2 * bit + 1);
        t.key |= ((qx >> bit) & 1u) << (2 * bit);
      }
      t.taps.reserve(bins * g.ay.grid * g.ax.grid);
      for (int64_t ph = 0; ph < pooled_height; ++ph) {
        for (int64_t pw = 0; pw < pooled_width; ++pw) {
          t.begin[ph * pooled_width + pw] = static_cast<int32_t>(t.taps.size());
          for (int64_t iy = 0; iy < g.ay.grid; ++iy) {
            for (int64_t ix = 0; ix < g.ax.grid; ++ix) {
              acc_t y, x;
              rotated_sample_point(g, ph, pw, iy, ix, &y, &x);
              const AxisSample<acc_t> sy = bilinear_axis(y, height);
              const AxisSample<acc_t> sx = bilinear_axis(x, width);
              PackedTap<acc_t> s;
              s.weight[0] = sy.w_low * sx.w_low;
              s.weight[1] = sy.w_low * sx.w_high;
              s.weight[2] = sy.w_high * sx.w_low;
              s.weight[3] = sy.w_high * sx.w_high;
              if (s.weight[0] == acc_t(0) && s.weight[1] == acc_t(0) && s.weight[2] == acc_t(0) &&
                  s.weight[3] == acc_t(0)) {
                continue;  // off the map
              }
              s.index = sy.low * width + sx.low;
              s.dx = static_cast<int32_t>(sx.high - sx.low);
              s.dy = static_cast<int32_t>(sy.high - sy.low);
              t.taps.push_back(s);
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

// Element strides of a 4-d tensor.
struct Strides4 {
  int64_t n, c, h, w;
};

inline Strides4 strides4(const at::Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

// The RoIs of each image, in index order: image b's are order[offsets[b] .. offsets[b + 1]).
template <typename acc_t>
void group_by_image(const std::vector<RotatedRoiTaps<acc_t>>& all, int64_t batch_size, std::vector<int64_t>& offsets,
                    std::vector<int64_t>& order) {
  offsets.assign(batch_size + 1, 0);
  order.resize(all.size());
  for (const auto& t : all) {
    ++offsets[t.batch + 1];
  }
  for (int64_t b = 0; b < batch_size; ++b) {
    offsets[b + 1] += offsets[b];
  }
  std::vector<int64_t> fill(offsets.begin(), offsets.end() - 1);
  for (size_t k = 0; k < all.size(); ++k) {
    order[fill[all[k].batch]++] = static_cast<int64_t>(k);
  }
  // Within an image, RoIs along a Z-order curve of their centres: consecutive RoIs read nearby
  // pixels, which are then still in cache. The order never changes a result: each output has one
  // writer, and the backward adds in this fixed order whatever the thread count.
  for (int64_t b = 0; b < batch_size; ++b) {
    std::stable_sort(order.begin() + offsets[b], order.begin() + offsets[b + 1],
                     [&](int64_t x, int64_t y) { return all[x].key < all[y].key; });
  }
}

// ---- forward ---------------------------------------------------------------------------------

// The threads for a kernel of `work` outputs (run_tasks' max_threads): below kSerialWork, the
// calling thread alone.
inline int64_t threads_for(int64_t work) {
  return work < kSerialWork ? 1 : static_cast<int64_t>(at::get_num_threads());
}

// Sums the taps [s0, s1) of one bin over channels [0, nc) of an image laid out [H * W,
// pixel_stride] (pixel p's channels start at image + p * pixel_stride) into acc (nc values).
template <typename in_t, typename acc_t>
inline void sum_taps_n(const PackedTap<acc_t>* taps, int32_t s0, int32_t s1, const in_t* image, int64_t width,
                       int64_t pixel_stride, int64_t nc, acc_t* acc) {
  std::fill(acc, acc + nc, acc_t(0));
  const int64_t row = width * pixel_stride;
  for (int32_t s = s0; s < s1; ++s) {
    const PackedTap<acc_t>& tap = taps[s];
    const in_t* p0 = image + tap.index * pixel_stride;
    const in_t* p1 = p0 + tap.dx * pixel_stride;
    const in_t* p2 = p0 + tap.dy * row;
    const in_t* p3 = p2 + tap.dx * pixel_stride;
    const acc_t w0 = tap.weight[0], w1 = tap.weight[1], w2 = tap.weight[2], w3 = tap.weight[3];
#pragma omp simd
    for (int64_t c = 0; c < nc; ++c) {
      acc[c] += w0 * static_cast<acc_t>(p0[c]) + w1 * static_cast<acc_t>(p1[c]) + w2 * static_cast<acc_t>(p2[c]) +
                w3 * static_cast<acc_t>(p3[c]);
    }
  }
}

// sum_taps_n for a compile-time channel count kWidth, times scale, into out: the sums stay in
// registers.
template <int64_t kWidth, typename in_t, typename acc_t>
inline void sum_taps(const PackedTap<acc_t>* taps, int32_t s0, int32_t s1, const in_t* image, int64_t width,
                     int64_t pixel_stride, acc_t scale, acc_t* out) {
#if defined(__AVX512F__)
  if constexpr (kWidth == 16 && std::is_same_v<in_t, float> && std::is_same_v<acc_t, float>) {
    const int64_t row = width * pixel_stride;
    // One register of 16 channels, written out: left to itself GCC turned some of the four
    // contiguous loads into gathers.
    __m512 a = _mm512_setzero_ps();
    for (int32_t s = s0; s < s1; ++s) {
      const PackedTap<acc_t>& tap = taps[s];
      const float* p0 = image + tap.index * pixel_stride;
      const float* p2 = p0 + tap.dy * row;
      const int64_t dx = tap.dx * pixel_stride;
      __m512 v = _mm512_mul_ps(_mm512_set1_ps(tap.weight[0]), _mm512_loadu_ps(p0));
      v = _mm512_fmadd_ps(_mm512_set1_ps(tap.weight[1]), _mm512_loadu_ps(p0 + dx), v);
      v = _mm512_fmadd_ps(_mm512_set1_ps(tap.weight[2]), _mm512_loadu_ps(p2), v);
      v = _mm512_fmadd_ps(_mm512_set1_ps(tap.weight[3]), _mm512_loadu_ps(p2 + dx), v);
      a = _mm512_add_ps(a, v);
    }
    _mm512_storeu_ps(out, _mm512_mul_ps(a, _mm512_set1_ps(scale)));
    return;
  }
#endif
  acc_t a[kWidth];
  sum_taps_n(taps, s0, s1, image, width, pixel_stride, kWidth, a);
#pragma omp simd
  for (int64_t c = 0; c < kWidth; ++c) {
    out[c] = a[c] * scale;
  }
}

// input: [N, H, W, C] in memory (channels_last); out: [K, PH, PW, C] in memory. Parallel over RoIs
// in spatial order (neighbouring RoIs share pixels, found in cache); a bin is summed 64 channels
// at a time (four AVX-512 registers of float32), so the sums stay in registers while the bin's taps,
// few and in L1, are read once per 64 channels.
template <typename scalar_t, typename acc_t>
void forward_channels_last(const std::vector<RotatedRoiTaps<acc_t>>& all, const at::Tensor& input, int64_t bins,
                           at::Tensor& out) {
  const int64_t batch_size = input.size(0), channels = input.size(1), height = input.size(2), width = input.size(3);
  std::vector<int64_t> offsets, visit;
  group_by_image(all, batch_size, offsets, visit);
  const int64_t num_rois = static_cast<int64_t>(all.size());
  const scalar_t* in = input.const_data_ptr<scalar_t>();
  scalar_t* o = out.mutable_data_ptr<scalar_t>();
  run_tasks(
      num_rois, threads_for(num_rois * channels * bins), [&] { return std::vector<acc_t>(channels); },
      [&](int64_t j, std::vector<acc_t>& acc) {
        const int64_t k = visit[j];
        const RotatedRoiTaps<acc_t>& t = all[k];
        const scalar_t* image = in + t.batch * height * width * channels;
        for (int64_t bin = 0; bin < bins; ++bin) {
          scalar_t* dst = o + (k * bins + bin) * channels;
          sum_taps_n(t.taps.data(), t.begin[bin], t.begin[bin + 1], image, width, channels, channels, acc.data());
#pragma omp simd
          for (int64_t c = 0; c < channels; ++c) {
            dst[c] = static_cast<scalar_t>(acc[c] * t.inv_count);
          }
        }
      });
}

// input: [N, C, H, W] contiguous; out: [K, C, PH, PW] contiguous. Tasks are (image, block of 16
// float32 channels), image-major so that a thread's consecutive tasks reuse the image's taps from
// cache. A task copies the rows its RoIs read of its channel planes into a [H * W, 16] scratch
// (3.9 MB for a 200 x 304 map: it stays in cache while every RoI of the image reads it), pools
// each RoI's bins from it, and writes the RoI's [16, PH * PW] block of the output, one contiguous
// run, with streaming stores. Cheaper than transposing the whole map, and than sampling the planes
// in place, where each tap of each channel is a scalar load.
template <typename scalar_t, typename acc_t>
void forward_nchw(const std::vector<RotatedRoiTaps<acc_t>>& all, const at::Tensor& input, int64_t bins,
                  at::Tensor& out) {
  constexpr int64_t kLine = 64 / sizeof(acc_t);
  const int64_t batch_size = input.size(0), channels = input.size(1), height = input.size(2), width = input.size(3);
  const int64_t plane = height * width;
  const int64_t block = std::min(kLine, channels);
  const int64_t blocks = (channels + block - 1) / block;
  std::vector<int64_t> offsets, visit;
  group_by_image(all, batch_size, offsets, visit);
  // The map rows some RoI of the image reads: the only rows copied into the scratch.
  std::vector<std::vector<char>> rows_read(batch_size, std::vector<char>(height, 0));
  for (const RotatedRoiTaps<acc_t>& t : all) {
    std::vector<char>& rows = rows_read[t.batch];
    for (const PackedTap<acc_t>& tap : t.taps) {
      const int64_t r = tap.index / width;
      rows[r] = rows[r + tap.dy] = 1;
    }
  }
  const scalar_t* in = input.const_data_ptr<scalar_t>();
  scalar_t* o = out.mutable_data_ptr<scalar_t>();
  const int64_t work = static_cast<int64_t>(all.size()) * channels * bins;
  const int64_t tasks = batch_size * blocks;
  struct Scratch {
    std::vector<acc_t> map, pooled;
    std::vector<scalar_t> roi_out;
  };
  run_tasks(
      tasks, threads_for(work),
      [&] { return Scratch{std::vector<acc_t>(plane * block), std::vector<acc_t>(bins * block),
                           std::vector<scalar_t>(bins * block)}; },
      [&](int64_t task, Scratch& sc) {
        const int64_t image = task / blocks;
        const int64_t c0 = (task % blocks) * block;
        const int64_t nc = std::min(block, channels - c0);
        if (offsets[image] == offsets[image + 1]) {
          return;
        }
        const scalar_t* planes = in + (image * channels + c0) * plane;
        for_each_run(rows_read[image], [&](int64_t r0, int64_t r1) {
          planes_to_block(planes, plane, r0 * width, r1 * width, nc, block, sc.map.data());
        });
        for (int64_t j = offsets[image]; j < offsets[image + 1]; ++j) {
          const int64_t k = visit[j];
          const RotatedRoiTaps<acc_t>& t = all[k];
          for (int64_t bin = 0; bin < bins; ++bin) {
            acc_t* p = sc.pooled.data() + bin * block;
            if (block == kLine) {
              sum_taps<kLine>(t.taps.data(), t.begin[bin], t.begin[bin + 1], sc.map.data(), width, kLine,
                              t.inv_count, p);
            } else {
              sum_taps_n(t.taps.data(), t.begin[bin], t.begin[bin + 1], sc.map.data(), width, block, block, p);
              for (int64_t c = 0; c < block; ++c) {
                p[c] *= t.inv_count;
              }
            }
          }
          // [bins, block] -> the RoI's [nc, bins] block of the output, one contiguous run.
          block_to_planes(sc.pooled.data(), bins, 0, bins, nc, block, sc.roi_out.data());
          stream_copy(sc.roi_out.data(), nc * bins, o + (k * channels + c0) * bins);
        }
        streaming_stores_done();
      });
}

at::Tensor roi_align_rotated_forward_cpu(const at::Tensor& input_in, const at::Tensor& rois_in, double spatial_scale,
                                         int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                         bool aligned) {
  const char* op = "roi_align_rotated";
  TORCH_CHECK_VALUE(input_in.dim() == 4, op, ": input must be [N, C, H, W], got ", input_in.sizes());
  check_roi_align_rotated_args(op, rois_in, input_in, spatial_scale, pooled_height, pooled_width);
  const int64_t num_rois = rois_in.size(0), channels = input_in.size(1);
  const int64_t height = input_in.size(2), width = input_in.size(3);
  const bool channels_last = use_channels_last(input_in);
  const auto format = memory_format_for(channels_last);
  at::Tensor out =
      at::empty({num_rois, channels, pooled_height, pooled_width}, input_in.options().memory_format(format));
  if (out.numel() == 0) {
    return out;
  }
  const at::Tensor input = input_in.contiguous(format);
  const at::Tensor rois = rois_in.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align_rotated_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto all = build_rotated_taps<scalar_t, acc_t>(op, rois, input.size(0), height, width, spatial_scale,
                                                          pooled_height, pooled_width, sampling_ratio, aligned);
    if (channels_last) {
      forward_channels_last<scalar_t, acc_t>(all, input, pooled_height * pooled_width, out);
    } else {
      forward_nchw<scalar_t, acc_t>(all, input, pooled_height * pooled_width, out);
    }
  });
  return out;
}

// How the backward splits the work: tasks (image, channel block), block channels of two cache
// lines (fewer passes over the taps than one line, a scratch that still fits in the last-level
// cache).
template <typename acc_t>
struct BlockPlan {
  static constexpr int64_t kBlock = 128 / sizeof(acc_t);
  int64_t blocks, tasks, grain;
  BlockPlan(int64_t batch_size, int64_t channels, int64_t work) {
    blocks = (channels + kBlock - 1) / kBlock;
    tasks = batch_size * blocks;
    grain = work < kSerialWork ? std::max<int64_t>(tasks, 1) : 1;
  }
};

// The inverse of a pixel-major load: element (image, c0 + c, h, w) of t = scratch[(h * W + w) * B + c].
template <typename scalar_t, typename acc_t, int64_t B>
void store_block(const acc_t* scratch, int64_t image, int64_t c0, int64_t nc, int64_t height, int64_t width,
                 scalar_t* t, const Strides4& st) {
  scalar_t* base = t + image * st.n + c0 * st.c;
  if (st.c == 1) {
    for (int64_t h = 0; h < height; ++h) {
      for (int64_t w = 0; w < width; ++w) {
        scalar_t* px = base + h * st.h + w * st.w;
        const acc_t* s = scratch + (h * width + w) * B;
        for (int64_t c = 0; c < nc; ++c) {
          px[c] = static_cast<scalar_t>(s[c]);
        }
      }
    }
  } else {
    for (int64_t c = 0; c < nc; ++c) {
      scalar_t* plane = base + c * st.c;
      for (int64_t h = 0; h < height; ++h) {
        for (int64_t w = 0; w < width; ++w) {
          plane[h * st.h + w * st.w] = static_cast<scalar_t>(scratch[(h * width + w) * B + c]);
        }
      }
    }
  }
}

// grad: [K, C, PH, PW] (any strides); grad_input: [N, C, H, W] (any strides), every element written.
template <typename scalar_t, typename acc_t>
void backward_kernel(const std::vector<RotatedRoiTaps<acc_t>>& all, const at::Tensor& grad, int64_t pooled_width,
                     at::Tensor& grad_input) {
  constexpr int64_t B = BlockPlan<acc_t>::kBlock;
  const int64_t batch_size = grad_input.size(0), channels = grad_input.size(1);
  const int64_t height = grad_input.size(2), width = grad_input.size(3);
  const int64_t bins = grad.size(2) * grad.size(3);
  std::vector<int64_t> offsets, order;
  group_by_image(all, batch_size, offsets, order);
  const BlockPlan<acc_t> plan(batch_size, channels, static_cast<int64_t>(all.size()) * channels * bins);
  const scalar_t* g = grad.const_data_ptr<scalar_t>();
  const Strides4 gs = strides4(grad), os = strides4(grad_input);
  scalar_t* o = grad_input.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, plan.tasks, plan.grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> scratch(height * width * B);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t image = task / plan.blocks;
      const int64_t c0 = (task % plan.blocks) * B;
      const int64_t nc = std::min(B, channels - c0);
      std::fill(scratch.begin(), scratch.end(), acc_t(0));
      acc_t* sc = scratch.data();
      for (int64_t j = offsets[image]; j < offsets[image + 1]; ++j) {
        const int64_t k = order[j];
        const RotatedRoiTaps<acc_t>& t = all[k];
        for (int64_t bin = 0; bin < bins; ++bin) {
          if (t.begin[bin] == t.begin[bin + 1]) {
            continue;
          }
          const scalar_t* src = g + k * gs.n + c0 * gs.c + (bin / pooled_width) * gs.h + (bin % pooled_width) * gs.w;
          acc_t gb[B] = {};
          for (int64_t c = 0; c < nc; ++c) {
            gb[c] = static_cast<acc_t>(src[c * gs.c]) * t.inv_count;
          }
          for (int32_t s = t.begin[bin]; s < t.begin[bin + 1]; ++s) {
            const PackedTap<acc_t>& tap = t.taps[s];
            const int64_t corner[4] = {tap.index, tap.index + tap.dx, tap.index + tap.dy * width,
                                       tap.index + tap.dy * width + tap.dx};
            // One corner at a time: corners coincide on the last row or column, and each pass
            // must see the previous one's additions.
            for (int q = 0; q < 4; ++q) {
              acc_t* d = sc + corner[q] * B;
              const acc_t w = tap.weight[q];
#pragma omp simd
              for (int64_t c = 0; c < B; ++c) {
                d[c] += w * gb[c];
              }
            }
          }
        }
      }
      store_block<scalar_t, acc_t, B>(sc, image, c0, nc, height, width, o, os);
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
  at::Tensor grad_input = at::empty({batch_size, channels, height, width},
                                    grad.options().memory_format(memory_format_for(channels_last)));
  if (grad_input.numel() == 0) {
    return grad_input;
  }
  const at::Tensor rois = rois_in.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "roi_align_rotated_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    // Accumulated in acc_t (float32 for the half types), rounded once when the block is stored.
    const auto all = build_rotated_taps<scalar_t, acc_t>(op, rois, batch_size, height, width, spatial_scale,
                                                          pooled_height, pooled_width, sampling_ratio, aligned);
    backward_kernel<scalar_t, acc_t>(all, grad, pooled_width, grad_input);
  });
  return grad_input;
}

}  // namespace
}  // namespace cpu

TORCH_LIBRARY_IMPL(roiops, CPU, m) {
  m.impl("roi_align_rotated", &cpu::roi_align_rotated_forward_cpu);
  m.impl("roi_align_rotated_backward", &cpu::roi_align_rotated_backward_cpu);
}

}  // namespace roiops
