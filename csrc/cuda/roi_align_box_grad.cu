// The backward of RoIAlign to the box coordinates on CUDA, for one map (roi_align_backward_rois)
// and an FPN pyramid (multi_scale_roi_align_backward_rois), and the second derivatives through it
// (roi_align_backward_rois_backward, for both). The per-sample derivatives are
// common/roi_align_math.h's, as on the CPU (cpu/roi_align_box_grad.cpp explains the quantities).

#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/Atomic.cuh>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "common/box_grad_results.h"
#include "common/checks.h"
#include "common/memory_format.h"
#include "common/roi_align_math.h"
#include "cuda/checks.cuh"
#include "cuda/launch.cuh"
#include "cuda/roi_align.cuh"
#include "cuda/roi_align_roi.cuh"

namespace roiops {
namespace {

// ---- backward to the box coordinates ------------------------------------------------------------
//
// d(sum(grad * roi_align(input, rois)))/d(rois): one block per RoI; each thread sums its share of
// (channel, bin) pairs, then a fixed tree reduction combines them, so the result is deterministic.

constexpr int kRoisThreads = 256;

// d(position)/d(box lo) and d(position)/d(box hi) of one sample along one axis.
template <typename acc_t>
struct SampleSlopes {
  acc_t d_lo, d_hi;
};

template <typename acc_t>
__device__ inline SampleSlopes<acc_t> slopes_of(const RoiAxis<acc_t>& axis, acc_t scale, int64_t p, int64_t i) {
  SampleSlopes<acc_t> s;
  sample_position_slopes(axis, scale, p, i, &s.d_lo, &s.d_hi);
  return s;
}

// The sample walk of the per-RoI box-gradient kernels: for every sample of bin (ph, pw) of RoI r,
// calls fn(ty, tx, slopes_y, slopes_x, v_ll, v_lh, v_hl, v_hh) with its taps, its position slopes
// and the four corner values of channel c of the RoI's map, in acc_t. The CPU's
// for_each_sample_corners, with the taps computed on the fly.
template <typename acc_t, typename scalar_t, typename Fn>
__device__ inline void for_each_sample_corners(const LevelMaps<const scalar_t>& maps, const RoiAlignRoi<acc_t>& r,
                                               int64_t c, int64_t ph, int64_t pw, Fn fn) {
  const acc_t scale = static_cast<acc_t>(maps.spatial_scale[r.level]);
  const MapPlane<const scalar_t> m = maps.plane(r.level, r.batch_index, c);
  SampleSlopes<acc_t> sy{};
  const scalar_t* row_lo = nullptr;
  const scalar_t* row_hi = nullptr;
  walk_bin_samples(
      r, ph, pw, m.height, m.width,
      [&](int64_t iy, const AxisSample<acc_t>& ty) {
        sy = slopes_of(r.ay, scale, ph, iy);
        row_lo = m.data + ty.low * m.row;
        row_hi = m.data + ty.high * m.row;
      },
      [&](const AxisSample<acc_t>& ty, int64_t ix, const AxisSample<acc_t>& tx) {
        fn(ty, tx, sy, slopes_of(r.ax, scale, pw, ix), static_cast<acc_t>(row_lo[tx.low * m.col]),
           static_cast<acc_t>(row_lo[tx.high * m.col]), static_cast<acc_t>(row_hi[tx.low * m.col]),
           static_cast<acc_t>(row_hi[tx.high * m.col]));
      });
}

// Sums every thread's derivative over the block in a fixed tree (deterministic) and writes
// (0, x1, y1, x2, y2) to out[0 .. 5). Ends with a barrier, so partial can be reused.
template <typename acc_t>
__device__ inline void block_sum_box_row(acc_t (*partial)[kRoisThreads], const BoxCoords<acc_t>& d, acc_t* out) {
  partial[0][threadIdx.x] = d.x1;
  partial[1][threadIdx.x] = d.y1;
  partial[2][threadIdx.x] = d.x2;
  partial[3][threadIdx.x] = d.y2;
  __syncthreads();
  for (int half = kRoisThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      for (int j = 0; j < 4; ++j) {
        partial[j][threadIdx.x] += partial[j][threadIdx.x + half];
      }
    }
    __syncthreads();
  }
  if (threadIdx.x < 5) {
    out[threadIdx.x] = threadIdx.x == 0 ? acc_t(0) : partial[threadIdx.x - 1][0];
  }
  __syncthreads();
}

// The walk of both per-RoI kernels: block b takes RoIs b, b + gridDim.x, ...; its threads share the
// RoI's (channel, bin) pairs, calling bin(k, r, c, ph, pw, &sums) for each (also for an invalid
// RoI: the kernel decides what it writes then). The threads' sums, the RoI's derivative with
// respect to its box, go to box_out[5k .. 5k + 5) through block_sum_box_row.
template <typename scalar_t, typename acc_t, typename BinFn>
__device__ inline void for_each_roi_bin_in_block(const LevelMaps<const scalar_t>& maps,
                                                 const scalar_t* __restrict__ rois, const int64_t* __restrict__ levels,
                                                 int64_t num_rois, const PoolShape& s, acc_t (*partial)[kRoisThreads],
                                                 acc_t* __restrict__ box_out, BinFn bin) {
  const int64_t bins = s.pooled_height * s.pooled_width;
  for (int64_t k = blockIdx.x; k < num_rois; k += gridDim.x) {
    const RoiAlignRoi<acc_t> r = load_roi_align_roi(rois, levels, k, maps.spatial_scale, maps.count, s);
    BoxCoords<acc_t> sums;
    for (int64_t item = threadIdx.x; item < s.channels * bins; item += blockDim.x) {
      const int64_t c = item / bins;
      const int64_t ph = (item % bins) / s.pooled_width;
      const int64_t pw = item % s.pooled_width;
      bin(k, r, c, ph, pw, &sums);
    }
    block_sum_box_row(partial, sums, box_out + 5 * k);
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kRoisThreads)
    roi_align_backward_rois_kernel_cuda(const scalar_t* __restrict__ grad, StridesNCHW gs,
                                        LevelMaps<const scalar_t> maps, const scalar_t* __restrict__ rois,
                                        const int64_t* __restrict__ levels, int64_t num_rois, PoolShape s,
                                        at::opmath_type<scalar_t>* __restrict__ grad_rois) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t partial[4][kRoisThreads];
  for_each_roi_bin_in_block(
      maps, rois, levels, num_rois, s, partial, grad_rois,
      [&](int64_t k, const RoiAlignRoi<acc_t>& r, int64_t c, int64_t ph, int64_t pw, BoxCoords<acc_t>* sums) {
        if (!r.valid) {
          return;
        }
        const acc_t gb = bin_grad(grad, gs, k, c, ph, pw, r.inv_count);
        if (gb == acc_t(0)) {
          return;
        }
        for_each_sample_corners(maps, r, c, ph, pw,
                                [&](const AxisSample<acc_t>& ty, const AxisSample<acc_t>& tx,
                                    const SampleSlopes<acc_t>& sy, const SampleSlopes<acc_t>& sx, acc_t v_ll,
                                    acc_t v_lh, acc_t v_hl, acc_t v_hh) {
                                  add_sample_box_gradient(ty, tx, sy, sx, gb, v_ll, v_lh, v_hl, v_hh, sums);
                                });
      });
}

// ---- second derivatives through the box gradient --------------------------------------------------
//
// The quantities of the CPU's roi_align_box_second_order_per_roi / _to_input
// (cpu/roi_align_box_grad.cpp explains them): S = <u, box gradient>, u = directions[k]. One block
// per RoI computes d grad (each (channel, bin) pair by one thread) and d rois (a fixed tree
// reduction, deterministic); d input is scattered with atomics, like the input backward.

// u = directions[k] without the batch-index column, in acc_t.
template <typename acc_t, typename scalar_t>
__device__ inline BoxCoords<acc_t> load_direction(const scalar_t* __restrict__ directions, int64_t k) {
  const scalar_t* u = directions + 5 * k;
  return {static_cast<acc_t>(u[1]), static_cast<acc_t>(u[2]), static_cast<acc_t>(u[3]), static_cast<acc_t>(u[4])};
}

template <typename scalar_t>
__global__ void __launch_bounds__(kRoisThreads)
    roi_align_box_second_order_kernel_cuda(const scalar_t* __restrict__ grad, StridesNCHW gs,
                                           LevelMaps<const scalar_t> maps, const scalar_t* __restrict__ rois,
                                           const scalar_t* __restrict__ directions,
                                           const int64_t* __restrict__ levels, int64_t num_rois, PoolShape s,
                                           scalar_t* __restrict__ d_grad, StridesNCHW ds,
                                           at::opmath_type<scalar_t>* __restrict__ d_rois) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t partial[4][kRoisThreads];
  for_each_roi_bin_in_block(
      maps, rois, levels, num_rois, s, partial, d_rois,
      [&](int64_t k, const RoiAlignRoi<acc_t>& r, int64_t c, int64_t ph, int64_t pw, BoxCoords<acc_t>* sums) {
        acc_t along = 0;  // sum of d_y * move_y + d_x * move_x over the bin's samples
        if (r.valid) {
          const BoxCoords<acc_t> u = load_direction<acc_t>(directions, k);
          const acc_t gb = bin_grad(grad, gs, k, c, ph, pw, r.inv_count);
          for_each_sample_corners(maps, r, c, ph, pw,
                                  [&](const AxisSample<acc_t>& ty, const AxisSample<acc_t>& tx,
                                      const SampleSlopes<acc_t>& sy, const SampleSlopes<acc_t>& sx, acc_t v_ll,
                                      acc_t v_lh, acc_t v_hl, acc_t v_hh) {
                                    along += add_sample_box_second_order(ty, tx, sy, sx, u, gb, v_ll, v_lh, v_hl,
                                                                         v_hh, sums);
                                  });
        }
        d_grad[k * ds.n + c * ds.c + ph * ds.h + pw * ds.w] = static_cast<scalar_t>(along * r.inv_count);
      });
}

template <typename scalar_t>
__global__ void roi_align_box_second_order_to_input_kernel_cuda(const scalar_t* __restrict__ grad, StridesNCHW gs,
                                                                const scalar_t* __restrict__ rois,
                                                                const scalar_t* __restrict__ directions,
                                                                const int64_t* __restrict__ levels, int64_t num_rois,
                                                                PoolShape s,
                                                                LevelMaps<at::opmath_type<scalar_t>> d_maps) {
  using acc_t = at::opmath_type<scalar_t>;
  for_each_pooled_grad<false>(d_maps, grad, gs, rois, levels, num_rois, s, [&](const PooledIndex& p,
                                                                               const RoiAlignRoi<acc_t>& r,
                                                                               acc_t gb) {
    const BoxCoords<acc_t> u = load_direction<acc_t>(directions, p.roi);
    const acc_t scale = static_cast<acc_t>(d_maps.spatial_scale[r.level]);
    const MapPlane<acc_t> m = d_maps.plane(r.level, r.batch_index, p.channel);
    acc_t move_y = 0;
    acc_t* row_lo = nullptr;
    acc_t* row_hi = nullptr;
    walk_bin_samples(
        r, p.ph, p.pw, m.height, m.width,
        [&](int64_t iy, const AxisSample<acc_t>& ty) {
          move_y = sample_move(slopes_of(r.ay, scale, p.ph, iy), u.y1, u.y2);
          row_lo = m.data + ty.low * m.row;
          row_hi = m.data + ty.high * m.row;
        },
        [&](const AxisSample<acc_t>& ty, int64_t ix, const AxisSample<acc_t>& tx) {
          acc_t w[4];
          bilinear_direction_weights(ty, tx, move_y, sample_move(slopes_of(r.ax, scale, p.pw, ix), u.x1, u.x2), w);
          gpuAtomicAdd(row_lo + tx.low * m.col, gb * w[0]);
          gpuAtomicAdd(row_lo + tx.high * m.col, gb * w[1]);
          gpuAtomicAdd(row_hi + tx.low * m.col, gb * w[2]);
          gpuAtomicAdd(row_hi + tx.high * m.col, gb * w[3]);
        });
  });
}

// Gradient with respect to the box coordinates, [K, 5] (column 0 is 0), in the features' dtype.
// One thread block per RoI with a fixed-order reduction: deterministic without a second path.
at::Tensor roi_align_backward_rois_levels_cuda(const char* op, const at::Tensor& grad,
                                               const std::vector<at::Tensor>& features, const at::Tensor& rois_in,
                                               const std::vector<double>& spatial_scales, const at::Tensor& levels,
                                               int64_t pooled_height, int64_t pooled_width,
                                               int64_t sampling_ratio, bool aligned) {
  check_box_grad_args(op, grad, features, spatial_scales, rois_in, pooled_height, pooled_width);
  const at::Tensor& first = features[0];
  TORCH_CHECK(first.is_cuda() && grad.is_cuda(), op, ": grad and input must be CUDA tensors");
  const int64_t num_rois = rois_in.size(0), batch_size = first.size(0), channels = first.size(1);
  check_levels_cuda(op, levels, num_rois, first);
  const c10::cuda::CUDAGuard guard(first.device());
  const at::ScalarType dtype = first.scalar_type();
  const at::ScalarType acc_dtype = at::toOpMathType(dtype);
  at::Tensor out = at::zeros({num_rois, 5}, rois_in.options().dtype(acc_dtype));
  if (num_rois > 0) {
    const at::Tensor rois = rois_in.contiguous();
    const PoolShape shape{batch_size, channels, pooled_height, pooled_width, sampling_ratio, aligned};
    cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "roi_align_backward_rois_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const auto maps = maps_of<const scalar_t>(op, features, spatial_scales);
      const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(num_rois, int64_t{65535} * 32));
      roi_align_backward_rois_kernel_cuda<scalar_t><<<blocks, kRoisThreads, 0, stream>>>(
          grad.const_data_ptr<scalar_t>(), strides_of(grad), maps, rois.const_data_ptr<scalar_t>(),
          levels.defined() ? levels.const_data_ptr<int64_t>() : nullptr, num_rois, shape,
          out.mutable_data_ptr<acc_t>());
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return acc_dtype != dtype ? out.to(dtype) : out;
}

// Second derivatives through the box gradient: (d grad, d features (one per level in the feature's
// memory format, none unless features_grad), d rois). d grad and d rois are deterministic;
// d features uses atomics (torch.use_deterministic_algorithms raises).
std::tuple<at::Tensor, std::vector<at::Tensor>, at::Tensor> roi_align_backward_rois_backward_levels_cuda(
    const char* op, const at::Tensor& grad, const std::vector<at::Tensor>& features, const at::Tensor& rois_in,
    const at::Tensor& grad_grad_rois, const std::vector<double>& spatial_scales, const at::Tensor& levels,
    int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned, bool features_grad) {
  check_box_grad_args(op, grad, features, spatial_scales, rois_in, pooled_height, pooled_width);
  check_grad_grad_rois(op, grad_grad_rois, rois_in);
  const at::Tensor& first = features[0];
  TORCH_CHECK(first.is_cuda() && grad.is_cuda(), op, ": grad and features must be CUDA tensors");
  const int64_t num_rois = rois_in.size(0), batch_size = first.size(0), channels = first.size(1);
  check_levels_cuda(op, levels, num_rois, first);
  const c10::cuda::CUDAGuard guard(first.device());
  const at::ScalarType dtype = first.scalar_type();
  BoxSecondOrderResults results(grad, features, rois_in, features_grad);
  if (num_rois > 0) {
    if (features_grad) {
      at::globalContext().alertNotDeterministic("roi_align_backward_rois_backward_cuda (to the features)");
    }
    const at::Tensor rois = rois_in.contiguous();
    const at::Tensor directions = grad_grad_rois.contiguous();
    const PoolShape shape{batch_size, channels, pooled_height, pooled_width, sampling_ratio, aligned};
    const int64_t* level_ptr = levels.defined() ? levels.const_data_ptr<int64_t>() : nullptr;
    cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "roi_align_backward_rois_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const auto maps = maps_of<const scalar_t>(op, features, spatial_scales);
      const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(num_rois, int64_t{65535} * 32));
      roi_align_box_second_order_kernel_cuda<scalar_t><<<blocks, kRoisThreads, 0, stream>>>(
          grad.const_data_ptr<scalar_t>(), strides_of(grad), maps, rois.const_data_ptr<scalar_t>(),
          directions.const_data_ptr<scalar_t>(), level_ptr, num_rois, shape,
          results.d_grad.mutable_data_ptr<scalar_t>(), strides_of(results.d_grad),
          results.d_rois.mutable_data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      if (features_grad && grad.numel() > 0) {
        const auto d_maps = maps_of<acc_t>(op, results.d_features, spatial_scales);
        roi_align_box_second_order_to_input_kernel_cuda<scalar_t><<<grid_for(grad.numel()), kThreads, 0, stream>>>(
            grad.const_data_ptr<scalar_t>(), strides_of(grad), rois.const_data_ptr<scalar_t>(),
            directions.const_data_ptr<scalar_t>(), level_ptr, num_rois, shape, d_maps);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    });
  }
  return results.finish(dtype);
}

at::Tensor roi_align_backward_rois_cuda(const at::Tensor& grad, const at::Tensor& input, const at::Tensor& rois,
                                        double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                                        int64_t sampling_ratio, bool aligned) {
  return roi_align_backward_rois_levels_cuda("roi_align_backward_rois", grad, {input}, rois, {spatial_scale},
                                             at::Tensor(), pooled_height, pooled_width, sampling_ratio, aligned);
}

at::Tensor multi_scale_roi_align_backward_rois_cuda(const at::Tensor& grad, at::TensorList features,
                                                    const at::Tensor& rois, at::ArrayRef<double> spatial_scales,
                                                    int64_t pooled_height, int64_t pooled_width,
                                                    int64_t sampling_ratio, bool aligned, double canonical_scale,
                                                    int64_t canonical_level) {
  const char* op = "multi_scale_roi_align_backward_rois";
  check_scale_per_map(op, features.size(), spatial_scales.size());
  const std::vector<double> scales = spatial_scales.vec();
  const at::Tensor levels = assign_levels_cuda(op, rois, scales, canonical_scale, canonical_level);
  return roi_align_backward_rois_levels_cuda(op, grad, features.vec(), rois, scales, levels, pooled_height,
                                             pooled_width, sampling_ratio, aligned);
}

// Both roi_align (one map; the level arguments are then unused) and the FPN pooler.
std::tuple<at::Tensor, std::vector<at::Tensor>, at::Tensor> roi_align_backward_rois_backward_cuda(
    const at::Tensor& grad, at::TensorList features, const at::Tensor& rois, const at::Tensor& grad_grad_rois,
    at::ArrayRef<double> spatial_scales, int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
    bool aligned, double canonical_scale, int64_t canonical_level, bool features_grad) {
  const char* op = "roi_align_backward_rois_backward";
  check_scale_per_map(op, features.size(), spatial_scales.size());
  const std::vector<double> scales = spatial_scales.vec();
  const at::Tensor levels = assign_levels_cuda(op, rois, scales, canonical_scale, canonical_level);
  return roi_align_backward_rois_backward_levels_cuda(op, grad, features.vec(), rois, grad_grad_rois, scales, levels,
                                                      pooled_height, pooled_width, sampling_ratio, aligned,
                                                      features_grad);
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CUDA, m) {
  m.impl("roi_align_backward_rois", &roi_align_backward_rois_cuda);
  m.impl("multi_scale_roi_align_backward_rois", &multi_scale_roi_align_backward_rois_cuda);
  m.impl("roi_align_backward_rois_backward", &roi_align_backward_rois_backward_cuda);
}

}  // namespace roiops
