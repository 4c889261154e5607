// RoIAlign (He et al., Mask R-CNN) on CUDA: forward and backward to the input (atomics, or a
// deterministic gather). The host drivers serve one map (roi_align) and a whole FPN pyramid in one
// launch (multi_scale_roi_align.cu). The backward to the box coordinates is roi_align_box_grad.cu.
//
// The per-RoI geometry and per-sample bilinear arithmetic are common/roi_align_math.h, the very
// functions the CPU kernels run, and the sums are formed in the CPU's NCHW order, so what the CPU
// tests prove about the numerics holds here.
//
// Layouts: every map is read through its strides, so NCHW and channels_last are read in place
// (no copy). Outputs follow the CPU's rule for the memory format; threads are mapped so that
// consecutive threads write consecutive addresses in either format.
//
// Backward to the input: the ordinary path scatters each sample's four bilinear contributions with
// atomicAdd into an accumulation buffer (float32 for the half types, rounded once at the end).
// Under torch.use_deterministic_algorithms(True) it gathers instead: each thread owns grad_input
// elements and sums, in a fixed RoI and sample order, every contribution that lands on them, so
// the result is bitwise repeatable; it equals the atomic result up to summation order.

#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <type_traits>
#include <vector>

#include "common/checks.h"
#include "common/memory_format.h"
#include "common/roi_align_math.h"
#include "cuda/checks.cuh"
#include "cuda/launch.cuh"
#include "cuda/roi_align.cuh"
#include "cuda/roi_align_roi.cuh"

namespace roiops {
namespace {

// ---- forward ------------------------------------------------------------------------------------

template <typename scalar_t, bool kChannelsLast>
__global__ void roi_align_forward_kernel_cuda(LevelMaps<const scalar_t> maps, const scalar_t* __restrict__ rois,
                                              const int64_t* __restrict__ levels, int64_t num_rois, PoolShape s,
                                              scalar_t* __restrict__ output) {
  using acc_t = at::opmath_type<scalar_t>;
  for_each_pooled_element<kChannelsLast>(maps, rois, levels, num_rois, s, [&](int64_t idx, const PooledIndex& p,
                                                                               const RoiAlignRoi<acc_t>& r) {
    if (!r.valid) {
      output[idx] = scalar_t(0);
      return;
    }
    const MapPlane<const scalar_t> m = maps.plane(r.level, r.batch_index, p.channel);
    output[idx] = static_cast<scalar_t>(bin_sample_sum(m, r, p.ph, p.pw) * r.inv_count);
  });
}

// ---- backward to the input, atomics -------------------------------------------------------------

template <typename scalar_t, bool kChannelsLast>
__global__ void roi_align_backward_atomic_kernel_cuda(const scalar_t* __restrict__ grad, StridesNCHW gs,
                                                      const scalar_t* __restrict__ rois,
                                                      const int64_t* __restrict__ levels, int64_t num_rois,
                                                      PoolShape s, LevelMaps<at::opmath_type<scalar_t>> grads) {
  using acc_t = at::opmath_type<scalar_t>;
  for_each_pooled_grad<kChannelsLast>(grads, grad, gs, rois, levels, num_rois, s, [&](const PooledIndex& p,
                                                                                       const RoiAlignRoi<acc_t>& r,
                                                                                       acc_t gb) {
    scatter_bin_samples(grads.plane(r.level, r.batch_index, p.channel), r, p.ph, p.pw, gb);
  });
}

// ---- backward to the input, deterministic gather ------------------------------------------------
//
// A thread block owns a kTile x kTile tile of one image of one level, all channels. It lists, in
// increasing RoI order, the RoIs of that image and level whose samples can reach the tile (their
// geometry cached in shared memory); then each thread, for each gradient element it alone owns,
// walks that list and, per RoI, only the samples that can reach its pixel: a sample at y touches
// rows floor(y) and floor(y) + 1, so only y in [h - 1, h + 1] matter, widened at the borders
// where samples are clamped onto the edge pixel. Whether a sample reaches the pixel, and with which
// weight, is decided by the same bilinear_axis call as the forward and the atomic path, so the
// same contributions are summed, in a fixed order.

constexpr int kTile = 8;
constexpr int kGatherThreads = 256;  // also the number of RoIs examined per pass

// The global sample indices [*first, *last) (s = bin * grid + i over the whole RoI; the position
// increases with s) whose position can fall in [lo, hi]: a superset, each is tested exactly.
// Solved in double with a margin for the rounding of positions computed in acc_t; a degenerate
// step gives every sample.
template <typename acc_t>
__device__ inline void samples_reaching(const RoiAxis<acc_t>& axis, int64_t pooled, double lo, double hi,
                                        int64_t* first, int64_t* last) {
  const int64_t n = pooled * axis.grid;
  *first = 0;
  *last = n;
  const double step = static_cast<double>(axis.bin_size) / static_cast<double>(axis.grid);
  const double start = static_cast<double>(axis.start);
  if (!(step > 0.0)) {
    return;
  }
  const double margin = 1e-5 * (fabs(start) + step * static_cast<double>(n) + 1.0);
  const double f = ::floor((lo - margin - start) / step - 0.5) - 1.0;
  const double l = ::ceil((hi + margin - start) / step - 0.5) + 2.0;
  const double nd = static_cast<double>(n);
  *first = f <= 0.0 ? 0 : f >= nd ? n : static_cast<int64_t>(f);
  *last = l <= 0.0 ? 0 : l >= nd ? n : static_cast<int64_t>(l);
  if (*last < *first) {
    *last = *first;
  }
}

// Whether the samples of an axis, spanning [start, start + pooled * bin_size], can reach pixels
// [p0, p1] of a map with `size` pixels. Conservative by a pixel and a relative margin.
template <typename acc_t>
__device__ inline bool axis_reaches(const RoiAxis<acc_t>& axis, int64_t pooled, int64_t p0, int64_t p1,
                                    int64_t size) {
  if (axis.grid <= 0) {
    return false;
  }
  const double a = static_cast<double>(axis.start);
  const double b = a + static_cast<double>(axis.bin_size) * static_cast<double>(pooled);
  const double margin = 1.0 + 1e-5 * (fabs(a) + fabs(b));
  const double lo = a < b ? a : b, hi = a < b ? b : a;
  const bool below = hi < static_cast<double>(p0) - 1.0 - margin && p0 > 0;
  const bool above = lo > static_cast<double>(p1) + 1.0 + margin && p1 < size - 1;
  return !below && !above;
}

// Whether a contributing sample touches `pixel`, and its weight there (both weights when the
// sample is clamped onto the border pixel, low == high).
template <typename acc_t>
__device__ inline bool touches(const AxisSample<acc_t>& s, int64_t pixel) {
  return contributes(s) && (s.low == pixel || s.high == pixel);
}

template <typename acc_t>
__device__ inline acc_t weight_at(const AxisSample<acc_t>& s, int64_t pixel) {
  return (s.low == pixel ? s.w_low : acc_t(0)) + (s.high == pixel ? s.w_high : acc_t(0));
}

template <typename scalar_t, bool kChannelsLast>
__global__ void __launch_bounds__(kGatherThreads)
    roi_align_backward_gather_kernel_cuda(const scalar_t* __restrict__ grad, StridesNCHW gs,
                                          const scalar_t* __restrict__ rois, const int64_t* __restrict__ levels,
                                          int64_t num_rois, PoolShape s, LevelMaps<at::opmath_type<scalar_t>> grads,
                                          int64_t level) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ int64_t listed_index[kGatherThreads];
  __shared__ RoiAxis<acc_t> listed_ay[kGatherThreads];
  __shared__ RoiAxis<acc_t> listed_ax[kGatherThreads];
  __shared__ acc_t listed_inv_count[kGatherThreads];
  __shared__ int warp_counts[kGatherThreads / 32];

  const int64_t height = grads.height[level], width = grads.width[level];
  const StridesNCHW st = grads.strides[level];
  acc_t* const out = grads.data[level];
  const int64_t tiles_w = (width + kTile - 1) / kTile;
  const int64_t image = blockIdx.y;
  const int64_t tile_h0 = (blockIdx.x / tiles_w) * kTile;
  const int64_t tile_w0 = (blockIdx.x % tiles_w) * kTile;
  const int64_t tile_h1 = std::min<int64_t>(tile_h0 + kTile, height) - 1;  // inclusive
  const int64_t tile_w1 = std::min<int64_t>(tile_w0 + kTile, width) - 1;
  const int64_t items = s.channels * kTile * kTile;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;

  for (int64_t chunk = 0; chunk < num_rois; chunk += kGatherThreads) {
    // 1. List this chunk's RoIs that reach the tile, in RoI order (warp ballots + a warp prefix).
    const int64_t k = chunk + threadIdx.x;
    bool listed = false;
    RoiAlignRoi<acc_t> r{};
    if (k < num_rois) {
      r = load_roi_align_roi(rois, levels, k, grads.spatial_scale, grads.count, s);
      listed = r.valid && r.batch_index == image && r.level == level &&
               axis_reaches(r.ay, s.pooled_height, tile_h0, tile_h1, height) &&
               axis_reaches(r.ax, s.pooled_width, tile_w0, tile_w1, width);
    }
    const unsigned ballot = __ballot_sync(0xffffffffu, listed);
    if (lane == 0) {
      warp_counts[warp] = __popc(ballot);
    }
    __syncthreads();
    int count = 0, offset = __popc(ballot & ((1u << lane) - 1u));
    for (int w = 0; w < kGatherThreads / 32; ++w) {
      offset += w < warp ? warp_counts[w] : 0;
      count += warp_counts[w];
    }
    if (listed) {
      listed_index[offset] = k;
      listed_ay[offset] = r.ay;
      listed_ax[offset] = r.ax;
      listed_inv_count[offset] = r.inv_count;
    }
    __syncthreads();

    // 2. Each thread accumulates into the gradient elements it alone owns.
    for (int64_t item = threadIdx.x; count > 0 && item < items; item += blockDim.x) {
      int64_t c, local;
      if (kChannelsLast) {
        c = item % s.channels;
        local = item / s.channels;
      } else {
        c = item / (kTile * kTile);
        local = item % (kTile * kTile);
      }
      const int64_t h = tile_h0 + local / kTile;
      const int64_t w = tile_w0 + local % kTile;
      if (h > tile_h1 || w > tile_w1) {
        continue;
      }
      // Positions that can reach row h / column w (the border pixels also take the clamped ones).
      const double y_lo = h == 0 ? -1.0 : static_cast<double>(h - 1);
      const double y_hi = h == height - 1 ? static_cast<double>(height) : static_cast<double>(h + 1);
      const double x_lo = w == 0 ? -1.0 : static_cast<double>(w - 1);
      const double x_hi = w == width - 1 ? static_cast<double>(width) : static_cast<double>(w + 1);
      acc_t sum = 0;
      for (int e = 0; e < count; ++e) {
        const RoiAxis<acc_t> ay = listed_ay[e];
        const RoiAxis<acc_t> ax = listed_ax[e];
        int64_t sy0, sy1, sx0, sx1;
        samples_reaching(ay, s.pooled_height, y_lo, y_hi, &sy0, &sy1);
        samples_reaching(ax, s.pooled_width, x_lo, x_hi, &sx0, &sx1);
        const scalar_t* g = grad + listed_index[e] * gs.n + c * gs.c;
        for (int64_t s_y = sy0; s_y < sy1; ++s_y) {
          const int64_t ph = s_y / ay.grid;
          const AxisSample<acc_t> sy = bilinear_axis(sample_position(ay, ph, s_y - ph * ay.grid), height);
          if (!touches(sy, h)) {
            continue;
          }
          const acc_t wy = weight_at(sy, h);
          for (int64_t s_x = sx0; s_x < sx1; ++s_x) {
            const int64_t pw = s_x / ax.grid;
            const AxisSample<acc_t> sx = bilinear_axis(sample_position(ax, pw, s_x - pw * ax.grid), width);
            if (!touches(sx, w)) {
              continue;
            }
            const acc_t gb = static_cast<acc_t>(g[ph * gs.h + pw * gs.w]) * listed_inv_count[e];
            if (gb != acc_t(0)) {
              sum += (gb * wy) * weight_at(sx, w);
            }
          }
        }
      }
      out[image * st.n + c * st.c + h * st.h + w * st.w] += sum;
    }
    __syncthreads();  // the list is rebuilt for the next chunk
  }
}


}  // namespace

at::Tensor roi_align_forward_levels_cuda(const char* op, const std::vector<at::Tensor>& features,
                                         const at::Tensor& rois_in, const std::vector<double>& spatial_scales,
                                         const at::Tensor& levels, int64_t pooled_height, int64_t pooled_width,
                                         int64_t sampling_ratio, bool aligned) {
  check_roi_align_args(op, features, spatial_scales, rois_in, pooled_height, pooled_width);
  const at::Tensor& first = features[0];
  TORCH_CHECK(first.is_cuda(), op, ": input must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(first.device());
  const bool channels_last = use_channels_last(first);
  const int64_t batch_size = first.size(0), channels = first.size(1);
  const int64_t num_rois = rois_in.size(0);
  check_levels_cuda(op, levels, num_rois, first);
  check_batch_indices_cuda(op, rois_in, batch_size);
  at::Tensor out = at::empty({num_rois, channels, pooled_height, pooled_width},
                             first.options().memory_format(memory_format_for(channels_last)));
  if (out.numel() == 0) {
    return out;
  }
  const at::Tensor rois = rois_in.contiguous();
  const PoolShape shape{batch_size, channels, pooled_height, pooled_width, sampling_ratio, aligned};
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, first.scalar_type(), "roi_align_forward_cuda", [&] {
    const auto maps = maps_of<const scalar_t>(op, features, spatial_scales);
    const int64_t* level_ptr = levels.defined() ? levels.const_data_ptr<int64_t>() : nullptr;
    auto launch = [&](auto channels_last_tag) {
      constexpr bool kCL = decltype(channels_last_tag)::value;
      roi_align_forward_kernel_cuda<scalar_t, kCL><<<grid_for(out.numel()), kThreads, 0, stream>>>(
          maps, rois.const_data_ptr<scalar_t>(), level_ptr, num_rois, shape, out.mutable_data_ptr<scalar_t>());
    };
    channels_last ? launch(std::true_type{}) : launch(std::false_type{});
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::vector<at::Tensor> roi_align_backward_levels_cuda(
    const char* op, const at::Tensor& grad, const at::Tensor& rois_in, const std::vector<double>& spatial_scales,
    const at::Tensor& levels, int64_t batch_size, int64_t channels, const std::vector<int64_t>& heights,
    const std::vector<int64_t>& widths, int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
    bool aligned, bool channels_last) {
  check_pooled_size(op, pooled_height, pooled_width);
  TORCH_CHECK(grad.is_cuda(), op, ": grad must be a CUDA tensor");
  check_rois(op, rois_in, grad);
  const int64_t num_rois = rois_in.size(0);
  check_pooled_grad(op, grad, rois_in, num_rois, channels, pooled_height, pooled_width);
  TORCH_CHECK_VALUE(heights.size() == spatial_scales.size() && widths.size() == spatial_scales.size(), op,
                    ": need one height, width and scale per feature map");
  TORCH_CHECK_VALUE(batch_size >= 0 && channels >= 0, op, ": negative batch_size or channels");
  check_levels_cuda(op, levels, num_rois, grad);
  const c10::cuda::CUDAGuard guard(grad.device());
  std::vector<at::Tensor> grads;
  for (size_t l = 0; l < heights.size(); ++l) {
    TORCH_CHECK_VALUE(heights[l] >= 0 && widths[l] >= 0, op, ": negative map size");
    grads.push_back(zeroed_grad_buffer(grad, {batch_size, channels, heights[l], widths[l]}, channels_last));
  }
  if (num_rois > 0 && channels > 0 && batch_size > 0) {
    const at::Tensor rois = rois_in.contiguous();
    const bool grad_channels_last = use_channels_last(grad);
    const PoolShape shape{batch_size, channels, pooled_height, pooled_width, sampling_ratio, aligned};
    const bool deterministic = at::globalContext().deterministicAlgorithms();
    cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "roi_align_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const auto maps = maps_of<acc_t>(op, grads, spatial_scales);
      const int64_t* level_ptr = levels.defined() ? levels.const_data_ptr<int64_t>() : nullptr;
      if (deterministic) {
        TORCH_CHECK(batch_size <= 65535, op, ": the deterministic backward supports at most 65535 images");
        // The gather threads walk the gradient's elements in its own memory order.
        auto launch = [&](auto channels_last_tag) {
          constexpr bool kCL = decltype(channels_last_tag)::value;
          for (int64_t l = 0; l < maps.count; ++l) {
            const int64_t tiles = ((heights[l] + kTile - 1) / kTile) * ((widths[l] + kTile - 1) / kTile);
            if (tiles == 0) {
              continue;
            }
            TORCH_CHECK(tiles <= std::numeric_limits<int32_t>::max(), op, ": feature map too large");
            const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(batch_size));
            roi_align_backward_gather_kernel_cuda<scalar_t, kCL><<<grid, kGatherThreads, 0, stream>>>(
                grad.const_data_ptr<scalar_t>(), strides_of(grad), rois.const_data_ptr<scalar_t>(), level_ptr,
                num_rois, shape, maps, l);
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          }
        };
        channels_last ? launch(std::true_type{}) : launch(std::false_type{});
      } else {
        // The scatter threads walk grad in its memory order (coalesced reads).
        auto launch = [&](auto channels_last_tag) {
          constexpr bool kCL = decltype(channels_last_tag)::value;
          roi_align_backward_atomic_kernel_cuda<scalar_t, kCL><<<grid_for(grad.numel()), kThreads, 0, stream>>>(
              grad.const_data_ptr<scalar_t>(), strides_of(grad), rois.const_data_ptr<scalar_t>(), level_ptr,
              num_rois, shape, maps);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        };
        grad_channels_last ? launch(std::true_type{}) : launch(std::false_type{});
      }
    });
  }
  for (at::Tensor& g : grads) {
    g = in_grad_dtype(g, grad);
  }
  return grads;
}

namespace {

at::Tensor roi_align_forward_cuda(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                  int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                  bool aligned) {
  return roi_align_forward_levels_cuda("roi_align", {input}, rois, {spatial_scale}, at::Tensor(), pooled_height,
                                       pooled_width, sampling_ratio, aligned);
}

at::Tensor roi_align_backward_cuda(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                   int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                   int64_t channels, int64_t height, int64_t width, int64_t sampling_ratio,
                                   bool aligned, bool channels_last) {
  return roi_align_backward_levels_cuda("roi_align_backward", grad, rois, {spatial_scale}, at::Tensor(),
                                        batch_size, channels, {height}, {width}, pooled_height, pooled_width,
                                        sampling_ratio, aligned, channels_last)[0];
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CUDA, m) {
  m.impl("roi_align", &roi_align_forward_cuda);
  m.impl("roi_align_backward", &roi_align_backward_cuda);
}

}  // namespace roiops
