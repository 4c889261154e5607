// The memory-format rule of every RoI kernel, on both devices: outputs (and input gradients) are
// channels_last when the input is, NCHW otherwise. roiops/_meta.py applies the same rule to the
// fake outputs. Host code only.
#pragma once

#include <ATen/core/Tensor.h>

namespace roiops {

// True for a 4-d tensor laid out as channels_last and not also plain contiguous: when C == 1 or
// H == W == 1 a tensor is both, and NCHW is used.
inline bool use_channels_last(const at::Tensor& input) {
  return input.dim() == 4 && !input.is_contiguous() && input.is_contiguous(at::MemoryFormat::ChannelsLast);
}

inline at::MemoryFormat memory_format_for(bool channels_last) {
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

}  // namespace roiops
