// Launch and indexing helpers shared by the CUDA RoI kernels (roi_align, roi_pool, the FPN
// pooler). CUDA-only; the per-sample arithmetic shared with the CPU lives in common/.
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>

namespace roiops {

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over `total` elements: enough to fill the GPU, never more than
// the loop needs.
inline unsigned grid_for(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(blocks, int64_t{65535} * 32)));
}

// Element strides of a 4-D tensor, so kernels read NCHW, channels_last or any strided view in place.
struct StridesNCHW {
  int64_t n, c, h, w;
};

inline StridesNCHW strides_of(const at::Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

// The memory format outputs take after their input: channels_last stays channels_last.
inline bool is_channels_last(const at::Tensor& t) {
  return t.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
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

}  // namespace roiops
