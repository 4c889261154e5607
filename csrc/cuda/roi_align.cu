// RoIAlign on CUDA: forward, backward with atomics, and a deterministic backward.
//
// The per-RoI geometry and per-sample bilinear arithmetic come from common/roi_align_math.h, the
// same functions the CPU kernel runs, so what the CPU tests prove about the numerics holds here.
//
// Layouts: input is read through its strides, so NCHW and channels_last are both read in place
// (no copy). The output and grad_input take the input's memory format; threads are mapped so
// that consecutive threads write consecutive addresses in either format.
//
// Backward: the ordinary path scatters each sample's four bilinear contributions with atomicAdd
// into an accumulation buffer (float32 for the half types). Under
// torch.use_deterministic_algorithms(True) it instead gathers: each thread owns one grad_input
// element and sums, in a fixed RoI/sample order, every contribution that lands on it, so the
// result is bitwise repeatable; it equals the atomic result up to summation order.

#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/Atomic.cuh>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <type_traits>

#include "common/roi_align_math.h"
#include "cuda/roi_launch.cuh"

namespace roiops {
namespace {

// One RoI, resolved once: its image and the sampling geometry of both axes (common/roi_align_math.h).
template <typename acc_t>
struct RoiAlignRoi {
  bool valid;  // finite box and batch index in [0, batch): otherwise it pools to 0, gets no gradient
  int64_t batch_index;
  RoiAxis<acc_t> ay, ax;
  acc_t inv_count;
};

template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
__device__ inline RoiAlignRoi<acc_t> load_roi_align_roi(const scalar_t* roi, int64_t batch, acc_t spatial_scale,
                                                        int64_t pooled_height, int64_t pooled_width,
                                                        int64_t sampling_ratio, bool aligned) {
  RoiAlignRoi<acc_t> r;
  const acc_t b = static_cast<acc_t>(roi[0]);
  const acc_t x1 = static_cast<acc_t>(roi[1]), y1 = static_cast<acc_t>(roi[2]);
  const acc_t x2 = static_cast<acc_t>(roi[3]), y2 = static_cast<acc_t>(roi[4]);
  // The wrapper rejects bad batch indices on the host; a direct call must still not read out of
  // bounds, so such a RoI is treated like a non-finite one. (!(b >= 0) also catches NaN.)
  r.valid = roi_is_finite(x1, y1, x2, y2) && b >= acc_t(0) && b < static_cast<acc_t>(batch);
  r.batch_index = r.valid ? static_cast<int64_t>(b) : 0;
  r.ay = roi_align_axis(y1, y2, spatial_scale, pooled_height, sampling_ratio, aligned);
  r.ax = roi_align_axis(x1, x2, spatial_scale, pooled_width, sampling_ratio, aligned);
  r.inv_count = roi_align_inv_count(r.ay, r.ax);
  return r;
}

// A sample outside [-1, size] has both weights 0; a sample inside has weights summing to 1.
template <typename acc_t>
__device__ inline bool contributes(const AxisSample<acc_t>& s) {
  return s.w_low != acc_t(0) || s.w_high != acc_t(0);
}

// ---- forward ------------------------------------------------------------------------------------

template <typename scalar_t, bool kChannelsLast>
__global__ void roi_align_forward_kernel_cuda(const scalar_t* __restrict__ input, StridesNCHW in_strides,
                                              int64_t batch, int64_t channels, int64_t height,
                                              int64_t width, const scalar_t* __restrict__ rois,
                                              int64_t num_rois, double spatial_scale, int64_t pooled_height,
                                              int64_t pooled_width, int64_t sampling_ratio, bool aligned,
                                              scalar_t* __restrict__ output) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = num_rois * channels * pooled_height * pooled_width;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const PooledIndex p = decode_pooled_index<kChannelsLast>(idx, channels, pooled_height, pooled_width);
    const RoiAlignRoi<acc_t> r = load_roi_align_roi(rois + 5 * p.roi, batch, static_cast<acc_t>(spatial_scale),
                                                    pooled_height, pooled_width, sampling_ratio, aligned);
    if (!r.valid) {
      output[idx] = scalar_t(0);
      continue;
    }
    const scalar_t* plane = input + r.batch_index * in_strides.n + p.channel * in_strides.c;
    int64_t iy0, iy1, ix0, ix1;
    sample_index_range(r.ay, p.ph, height, &iy0, &iy1);
    sample_index_range(r.ax, p.pw, width, &ix0, &ix1);
    acc_t sum = 0;
    for (int64_t iy = iy0; iy < iy1; ++iy) {
      const AxisSample<acc_t> sy = bilinear_axis(sample_position(r.ay, p.ph, iy), height);
      if (!contributes(sy)) {
        continue;
      }
      const scalar_t* row_low = plane + sy.low * in_strides.h;
      const scalar_t* row_high = plane + sy.high * in_strides.h;
      for (int64_t ix = ix0; ix < ix1; ++ix) {
        const AxisSample<acc_t> sx = bilinear_axis(sample_position(r.ax, p.pw, ix), width);
        if (!contributes(sx)) {
          continue;
        }
        const int64_t xl = sx.low * in_strides.w, xh = sx.high * in_strides.w;
        sum += sy.w_low * (sx.w_low * static_cast<acc_t>(row_low[xl]) + sx.w_high * static_cast<acc_t>(row_low[xh])) +
               sy.w_high * (sx.w_low * static_cast<acc_t>(row_high[xl]) + sx.w_high * static_cast<acc_t>(row_high[xh]));
      }
    }
    output[idx] = static_cast<scalar_t>(sum * r.inv_count);
  }
}

// ---- backward, atomics --------------------------------------------------------------------------

template <typename scalar_t, bool kChannelsLast>
__global__ void roi_align_backward_atomic_kernel_cuda(
    const scalar_t* __restrict__ grad_output, StridesNCHW go_strides, const scalar_t* __restrict__ rois,
    int64_t num_rois, double spatial_scale, int64_t pooled_height, int64_t pooled_width,
    int64_t sampling_ratio, bool aligned, int64_t batch, int64_t channels, int64_t height, int64_t width,
    StridesNCHW gi_strides, at::opmath_type<scalar_t>* __restrict__ grad_input) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = num_rois * channels * pooled_height * pooled_width;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const PooledIndex p = decode_pooled_index<kChannelsLast>(idx, channels, pooled_height, pooled_width);
    const RoiAlignRoi<acc_t> r = load_roi_align_roi(rois + 5 * p.roi, batch, static_cast<acc_t>(spatial_scale),
                                                    pooled_height, pooled_width, sampling_ratio, aligned);
    if (!r.valid) {
      continue;
    }
    const acc_t grad = static_cast<acc_t>(grad_output[p.roi * go_strides.n + p.channel * go_strides.c +
                                                      p.ph * go_strides.h + p.pw * go_strides.w]) *
                       r.inv_count;
    acc_t* plane = grad_input + r.batch_index * gi_strides.n + p.channel * gi_strides.c;
    int64_t iy0, iy1, ix0, ix1;
    sample_index_range(r.ay, p.ph, height, &iy0, &iy1);
    sample_index_range(r.ax, p.pw, width, &ix0, &ix1);
    for (int64_t iy = iy0; iy < iy1; ++iy) {
      const AxisSample<acc_t> sy = bilinear_axis(sample_position(r.ay, p.ph, iy), height);
      if (!contributes(sy)) {
        continue;
      }
      acc_t* row_low = plane + sy.low * gi_strides.h;
      acc_t* row_high = plane + sy.high * gi_strides.h;
      for (int64_t ix = ix0; ix < ix1; ++ix) {
        const AxisSample<acc_t> sx = bilinear_axis(sample_position(r.ax, p.pw, ix), width);
        if (!contributes(sx)) {
          continue;
        }
        const int64_t xl = sx.low * gi_strides.w, xh = sx.high * gi_strides.w;
        gpuAtomicAdd(row_low + xl, grad * (sy.w_low * sx.w_low));
        gpuAtomicAdd(row_low + xh, grad * (sy.w_low * sx.w_high));
        gpuAtomicAdd(row_high + xl, grad * (sy.w_high * sx.w_low));
        gpuAtomicAdd(row_high + xh, grad * (sy.w_high * sx.w_high));
      }
    }
  }
}

// ---- backward, deterministic gather -------------------------------------------------------------
//
// A thread block owns a tile of kTile x kTile pixels of one image, all channels. It lists, in
// increasing RoI order, the RoIs of that image whose samples can reach the tile (with their
// geometry, in shared memory); then each thread, for each grad_input element it alone owns, walks
// that list and, per RoI, only the samples that can reach its pixel: a sample at y touches rows
// floor(y) and floor(y) + 1, so only y in [h - 1, h + 1] matter, widened at the borders where
// samples are clamped onto the edge row. Whether a sample reaches the pixel, and with which weight,
// is decided by the same bilinear_axis call as the forward and the atomic path, so the same
// contributions are summed, in a fixed order.

constexpr int kTile = 8;
constexpr int kGatherThreads = 256;  // also the number of RoIs examined per pass

// The global sample indices s (s = bin * grid + i over the whole RoI, position increasing with s)
// whose position can fall in [lo, hi]: a superset, the caller tests each exactly. Solved in
// double with a margin for the rounding of positions computed in acc_t; a degenerate step gives
// every sample.
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
  const double margin = 1e-5 * (fabs(start) + fabs(step) * static_cast<double>(n) + 1.0);
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

// Weight of pixel `pixel` in a sample (0 when the sample does not touch it; both weights when the
// sample is clamped onto the border pixel, low == high).
template <typename acc_t>
__device__ inline acc_t weight_at(const AxisSample<acc_t>& s, int64_t pixel) {
  return (s.low == pixel ? s.w_low : acc_t(0)) + (s.high == pixel ? s.w_high : acc_t(0));
}

template <typename acc_t>
__device__ inline bool touches(const AxisSample<acc_t>& s, int64_t pixel) {
  return contributes(s) && (s.low == pixel || s.high == pixel);
}

template <typename scalar_t, bool kChannelsLast>
__global__ void __launch_bounds__(kGatherThreads) roi_align_backward_gather_kernel_cuda(
    const scalar_t* __restrict__ grad_output, StridesNCHW go_strides, const scalar_t* __restrict__ rois,
    int64_t num_rois, double spatial_scale, int64_t pooled_height, int64_t pooled_width,
    int64_t sampling_ratio, bool aligned, int64_t batch, int64_t channels, int64_t height, int64_t width,
    StridesNCHW gi_strides, at::opmath_type<scalar_t>* __restrict__ grad_input) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ int64_t listed_index[kGatherThreads];
  __shared__ RoiAxis<acc_t> listed_ay[kGatherThreads];
  __shared__ RoiAxis<acc_t> listed_ax[kGatherThreads];
  __shared__ acc_t listed_inv_count[kGatherThreads];
  __shared__ int warp_counts[kGatherThreads / 32];

  const int64_t tiles_w = (width + kTile - 1) / kTile;
  const int64_t image = blockIdx.y;
  const int64_t tile_h0 = (blockIdx.x / tiles_w) * kTile;
  const int64_t tile_w0 = (blockIdx.x % tiles_w) * kTile;
  const int64_t tile_h1 = std::min<int64_t>(tile_h0 + kTile, height) - 1;  // inclusive
  const int64_t tile_w1 = std::min<int64_t>(tile_w0 + kTile, width) - 1;
  const int64_t items = channels * kTile * kTile;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;

  for (int64_t chunk = 0; chunk < num_rois; chunk += kGatherThreads) {
    // 1. List this chunk's RoIs that reach the tile, in RoI order (warp ballots + warp prefix).
    const int64_t k = chunk + threadIdx.x;
    RoiAlignRoi<acc_t> r;
    bool listed = false;
    if (k < num_rois) {
      r = load_roi_align_roi(rois + 5 * k, batch, static_cast<acc_t>(spatial_scale), pooled_height,
                             pooled_width, sampling_ratio, aligned);
      listed = r.valid && r.batch_index == image && axis_reaches(r.ay, pooled_height, tile_h0, tile_h1, height) &&
               axis_reaches(r.ax, pooled_width, tile_w0, tile_w1, width);
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

    // 2. Each thread accumulates into the grad_input elements it alone owns.
    for (int64_t item = threadIdx.x; count > 0 && item < items; item += blockDim.x) {
      int64_t c, local;
      if (kChannelsLast) {
        c = item % channels;
        local = item / channels;
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
        samples_reaching(ay, pooled_height, y_lo, y_hi, &sy0, &sy1);
        samples_reaching(ax, pooled_width, x_lo, x_hi, &sx0, &sx1);
        const scalar_t* go = grad_output + listed_index[e] * go_strides.n + c * go_strides.c;
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
            const acc_t grad = static_cast<acc_t>(go[ph * go_strides.h + pw * go_strides.w]) * listed_inv_count[e];
            sum += grad * (wy * weight_at(sx, w));
          }
        }
      }
      grad_input[image * gi_strides.n + c * gi_strides.c + h * gi_strides.h + w * gi_strides.w] += sum;
    }
    __syncthreads();  // the list is rebuilt for the next chunk
  }
}

// ---- host entry points --------------------------------------------------------------------------

void check_roi_align_args_cuda(const char* op, const at::Tensor& tensor, const char* name,
                               const at::Tensor& rois, int64_t pooled_height, int64_t pooled_width) {
  TORCH_CHECK(tensor.is_cuda(), op, ": ", name, " must be a CUDA tensor");
  TORCH_CHECK(rois.device() == tensor.device(), op, ": rois and ", name, " are on different devices");
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, op, ": rois must be [K, 5]");
  TORCH_CHECK(rois.scalar_type() == tensor.scalar_type(), op, ": rois and ", name, " dtypes differ");
  TORCH_CHECK(tensor.dim() == 4, op, ": ", name, " must be 4-D");
  TORCH_CHECK(pooled_height > 0 && pooled_width > 0, op, ": pooled_height and pooled_width must be positive");
}

at::Tensor roi_align_forward_cuda(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                  int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                  bool aligned) {
  check_roi_align_args_cuda("roi_align", input, "input", rois, pooled_height, pooled_width);
  const c10::cuda::CUDAGuard guard(input.device());
  const bool channels_last = is_channels_last(input);
  const int64_t num_rois = rois.size(0);
  const int64_t channels = input.size(1);
  at::Tensor output = at::empty({num_rois, channels, pooled_height, pooled_width},
                                input.options().memory_format(channels_last ? at::MemoryFormat::ChannelsLast
                                                                            : at::MemoryFormat::Contiguous));
  if (output.numel() == 0) {
    return output;
  }
  if (input.numel() == 0) {  // an empty map (H or W = 0): every sample falls outside it
    return output.zero_();
  }
  const at::Tensor rois_c = rois.contiguous();
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align_forward_cuda", [&] {
    auto launch = [&](auto channels_last_tag) {
      constexpr bool kCL = decltype(channels_last_tag)::value;
      roi_align_forward_kernel_cuda<scalar_t, kCL><<<grid_for(output.numel()), kThreads, 0, stream>>>(
          input.const_data_ptr<scalar_t>(), strides_of(input), input.size(0), channels, input.size(2),
          input.size(3), rois_c.const_data_ptr<scalar_t>(), num_rois, spatial_scale, pooled_height, pooled_width,
          sampling_ratio, aligned, output.mutable_data_ptr<scalar_t>());
    };
    channels_last ? launch(std::true_type{}) : launch(std::false_type{});
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return output;
}

// grad_output: [K, C, PH, PW] -> grad_input [batch_size, C, height, width] in the memory format of
// grad_output (which the autograd formula gives in the input's format).
at::Tensor roi_align_backward_cuda(const at::Tensor& grad_output, const at::Tensor& rois, double spatial_scale,
                                   int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                   int64_t channels, int64_t height, int64_t width, int64_t sampling_ratio,
                                   bool aligned) {
  check_roi_align_args_cuda("roi_align_backward", grad_output, "grad_output", rois, pooled_height, pooled_width);
  TORCH_CHECK(grad_output.size(0) == rois.size(0) && grad_output.size(1) == channels &&
                  grad_output.size(2) == pooled_height && grad_output.size(3) == pooled_width,
              "roi_align_backward: grad_output must be [K, C, pooled_height, pooled_width]");
  TORCH_CHECK(batch_size >= 0 && height >= 0 && width >= 0, "roi_align_backward: negative input size");
  const c10::cuda::CUDAGuard guard(grad_output.device());
  const bool channels_last = is_channels_last(grad_output);
  const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const auto acc_type = at::toOpMathType(grad_output.scalar_type());
  at::Tensor grad_acc = at::zeros({batch_size, channels, height, width},
                                  grad_output.options().dtype(acc_type).memory_format(format));
  if (grad_acc.numel() == 0 || grad_output.numel() == 0) {
    return grad_acc.to(grad_output.scalar_type());
  }
  const at::Tensor rois_c = rois.contiguous();
  const int64_t num_rois = rois.size(0);
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const bool deterministic = at::globalContext().deterministicAlgorithms();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_output.scalar_type(), "roi_align_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto launch = [&](auto channels_last_tag) {
      constexpr bool kCL = decltype(channels_last_tag)::value;
      if (deterministic) {
        const int64_t tiles = ((height + kTile - 1) / kTile) * ((width + kTile - 1) / kTile);
        TORCH_CHECK(tiles <= std::numeric_limits<int32_t>::max() && batch_size <= 65535,
                    "roi_align_backward: input too large for the deterministic path");
        const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(batch_size));
        roi_align_backward_gather_kernel_cuda<scalar_t, kCL><<<grid, kGatherThreads, 0, stream>>>(
            grad_output.const_data_ptr<scalar_t>(), strides_of(grad_output), rois_c.const_data_ptr<scalar_t>(),
            num_rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned, batch_size, channels,
            height, width, strides_of(grad_acc), grad_acc.mutable_data_ptr<acc_t>());
      } else {
        roi_align_backward_atomic_kernel_cuda<scalar_t, kCL><<<grid_for(grad_output.numel()), kThreads, 0, stream>>>(
            grad_output.const_data_ptr<scalar_t>(), strides_of(grad_output), rois_c.const_data_ptr<scalar_t>(),
            num_rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned, batch_size, channels,
            height, width, strides_of(grad_acc), grad_acc.mutable_data_ptr<acc_t>());
      }
    };
    channels_last ? launch(std::true_type{}) : launch(std::false_type{});
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return grad_output.scalar_type() == acc_type ? grad_acc : grad_acc.to(grad_output.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CUDA, m) {
  m.impl("roi_align", &roi_align_forward_cuda);
  m.impl("roi_align_backward", &roi_align_backward_cuda);
}

}  // namespace roiops
