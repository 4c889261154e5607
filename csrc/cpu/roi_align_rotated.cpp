// RoIAlignRotated on the CPU: forward and backward to the input map.
//
// Plan: the taps of every sample of every RoI (four pixel indices and bilinear weights, from
// common/roi_align_rotated_math.h) are computed once per RoI. Both kernels then work by (image,
// block of channels), two cache lines of channels per block (32 float32): a task copies its block
// of the image into a pixel-major scratch ([H * W, 32], read through the input's strides, so NCHW
// and channels_last are served alike and no transposed copy of the whole map is made), and every
// tap of every RoI of that image is then one short vector multiply-add over the block, on data
// that stays in cache. The backward accumulates into such a scratch and writes the block of the
// input gradient once, in the requested memory format.
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
#include <vector>

#include "common/memory_format.h"
#include "common/roi_align_rotated_math.h"
#include "common/rotated_checks.h"

namespace roiops {
namespace cpu {
namespace {

// Below this many (RoI, channel, bin) outputs a kernel runs on the calling thread: waking the
// thread pool costs more than the work.
constexpr int64_t kSerialWork = 16384;

// The non-zero taps of one RoI: bin b's samples are taps[begin[b] .. begin[b + 1]).
template <typename acc_t>
struct RotatedRoiTaps {
  int64_t batch = 0;
  uint64_t key = 0;  // Z-order (Morton) code of the RoI centre in 8-pixel cells: the visiting order
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

// How the kernels split the work: tasks (image, channel block), block channels of two cache lines
// (fewer passes over the taps than one line, a scratch that still fits in the last-level cache).
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

// scratch[p * B + c] = element (image, c0 + c, p / W, p % W) of t, for c < nc; lanes c >= nc are 0.
template <typename scalar_t, typename acc_t, int64_t B>
void load_block(const scalar_t* t, const Strides4& st, int64_t image, int64_t c0, int64_t nc, int64_t height,
                int64_t width, acc_t* scratch) {
  if (nc < B) {
    std::fill(scratch, scratch + height * width * B, acc_t(0));
  }
  const scalar_t* base = t + image * st.n + c0 * st.c;
  if (st.c == 1) {  // channels_last: a block is contiguous per pixel
    for (int64_t h = 0; h < height; ++h) {
      for (int64_t w = 0; w < width; ++w) {
        const scalar_t* px = base + h * st.h + w * st.w;
        acc_t* d = scratch + (h * width + w) * B;
        for (int64_t c = 0; c < nc; ++c) {
          d[c] = static_cast<acc_t>(px[c]);
        }
      }
    }
  } else {  // NCHW (or any other layout): each channel plane read in order
    for (int64_t c = 0; c < nc; ++c) {
      const scalar_t* plane = base + c * st.c;
      for (int64_t h = 0; h < height; ++h) {
        for (int64_t w = 0; w < width; ++w) {
          scratch[(h * width + w) * B + c] = static_cast<acc_t>(plane[h * st.h + w * st.w]);
        }
      }
    }
  }
}

// The inverse of load_block: element (image, c0 + c, h, w) of t = scratch[(h * W + w) * B + c].
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

// out: [K, C, PH, PW] with strides os.
template <typename scalar_t, typename acc_t>
void forward_kernel(const std::vector<RotatedRoiTaps<acc_t>>& all, const at::Tensor& input, int64_t pooled_width,
                    at::Tensor& out) {
  constexpr int64_t B = BlockPlan<acc_t>::kBlock;
  const int64_t batch_size = input.size(0), channels = input.size(1), height = input.size(2), width = input.size(3);
  const int64_t bins = out.size(2) * out.size(3);
  std::vector<int64_t> offsets, order;
  group_by_image(all, batch_size, offsets, order);
  const BlockPlan<acc_t> plan(batch_size, channels, static_cast<int64_t>(all.size()) * channels * bins);
  const scalar_t* in = input.const_data_ptr<scalar_t>();
  const Strides4 is = strides4(input), os = strides4(out);
  scalar_t* o = out.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, plan.tasks, plan.grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> scratch(height * width * B);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t image = task / plan.blocks;
      const int64_t c0 = (task % plan.blocks) * B;
      const int64_t nc = std::min(B, channels - c0);
      if (offsets[image] == offsets[image + 1]) {
        continue;
      }
      load_block<scalar_t, acc_t, B>(in, is, image, c0, nc, height, width, scratch.data());
      const acc_t* sc = scratch.data();
      for (int64_t j = offsets[image]; j < offsets[image + 1]; ++j) {
        const int64_t k = order[j];
        const RotatedRoiTaps<acc_t>& t = all[k];
        for (int64_t bin = 0; bin < bins; ++bin) {
          acc_t acc[B] = {};
          for (int32_t s = t.begin[bin]; s < t.begin[bin + 1]; ++s) {
            const RotatedTaps<acc_t>& tap = t.taps[s];
            const acc_t* p0 = sc + tap.index[0] * B;
            const acc_t* p1 = sc + tap.index[1] * B;
            const acc_t* p2 = sc + tap.index[2] * B;
            const acc_t* p3 = sc + tap.index[3] * B;
            const acc_t w0 = tap.weight[0], w1 = tap.weight[1], w2 = tap.weight[2], w3 = tap.weight[3];
#pragma omp simd
            for (int64_t c = 0; c < B; ++c) {
              acc[c] += w0 * p0[c] + w1 * p1[c] + w2 * p2[c] + w3 * p3[c];
            }
          }
          scalar_t* dst = o + k * os.n + c0 * os.c + (bin / pooled_width) * os.h + (bin % pooled_width) * os.w;
          for (int64_t c = 0; c < nc; ++c) {
            dst[c * os.c] = static_cast<scalar_t>(acc[c] * t.inv_count);
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
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align_rotated_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto all = build_rotated_taps<scalar_t, acc_t>(op, rois, input.size(0), height, width, spatial_scale,
                                                          pooled_height, pooled_width, sampling_ratio, aligned);
    forward_kernel<scalar_t, acc_t>(all, input, pooled_width, out);
  });
  return out;
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
            const RotatedTaps<acc_t>& tap = t.taps[s];
            for (int q = 0; q < 4; ++q) {
              acc_t* d = sc + tap.index[q] * B;
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
