// Launch and indexing helpers shared by the CUDA kernels (RoI ops, boxes, masks), and the gradient
// buffers their atomic backwards sum into. CUDA-only; the per-sample arithmetic shared with the CPU
// lives in common/.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cstdint>

#include "common/memory_format.h"

namespace roiops {

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over `total` elements: enough to fill the GPU, never more than
// the loop needs.
inline unsigned grid_for(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(blocks, int64_t{65535} * 32)));
}

// The indices a thread visits in a grid-stride loop over [0, total): its global thread index, then
// steps of the whole grid's thread count. Written as a range so that the loop body keeps `continue`:
//   for (const int64_t idx : grid_stride_range(total)) { ... }
struct GridStrideRange {
  struct iterator {
    int64_t index, step;
    __device__ int64_t operator*() const { return index; }
    __device__ iterator& operator++() {
      index += step;
      return *this;
    }
    // Only ever compared with end(): "not yet past the end".
    __device__ bool operator!=(const iterator& end) const { return index < end.index; }
  };
  int64_t first, step, total;
  __device__ iterator begin() const { return {first, step}; }
  __device__ iterator end() const { return {total, step}; }
};

__device__ inline GridStrideRange grid_stride_range(int64_t total) {
  return {blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x, static_cast<int64_t>(blockDim.x) * gridDim.x,
          total};
}

// Element strides of a 4-D tensor, so kernels read NCHW, channels_last or any strided view in place.
struct StridesNCHW {
  int64_t n, c, h, w;
};

inline StridesNCHW strides_of(const at::Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

// Coordinates of a pooled element [roi, channel, ph, pw] from its linear index in the output's
// memory order: NCHW (pw fastest) or channels_last (channel fastest), so that consecutive threads
// write consecutive addresses.
struct PooledIndex {
  int64_t roi, channel, ph, pw;
};

template <bool kChannelsLast>
__device__ inline PooledIndex decode_pooled_index(int64_t idx, int64_t channels, int64_t pooled_height,
                                                  int64_t pooled_width) {
  PooledIndex p;
  if (kChannelsLast) {
    p.channel = idx % channels;
    idx /= channels;
    p.pw = idx % pooled_width;
    idx /= pooled_width;
    p.ph = idx % pooled_height;
    p.roi = idx / pooled_height;
  } else {
    p.pw = idx % pooled_width;
    idx /= pooled_width;
    p.ph = idx % pooled_height;
    idx /= pooled_height;
    p.channel = idx % channels;
    p.roi = idx / channels;
  }
  return p;
}

// A zeroed input-gradient buffer of `sizes` ([N, C, H, W]) in the memory format channels_last
// names, in grad's op-math dtype: the half types' atomic additions are summed in float32 and
// rounded once, by in_grad_dtype.
inline at::Tensor zeroed_grad_buffer(const at::Tensor& grad, at::IntArrayRef sizes, bool channels_last) {
  // at::empty + zero_, not at::zeros: at::zeros ignores the memory format.
  return at::empty(sizes, grad.options()
                              .dtype(at::toOpMathType(grad.scalar_type()))
                              .memory_format(memory_format_for(channels_last)))
      .zero_();
}

// A buffer of zeroed_grad_buffer in grad's dtype (its memory format kept).
inline at::Tensor in_grad_dtype(const at::Tensor& buffer, const at::Tensor& grad) {
  return buffer.scalar_type() == grad.scalar_type() ? buffer : buffer.to(grad.scalar_type());
}

}  // namespace roiops
