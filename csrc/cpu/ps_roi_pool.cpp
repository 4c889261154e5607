// Position-sensitive RoIPool (Dai et al., R-FCN) on the CPU: the average over each quantized bin
// (common/ps_roi_math.h, ps_roi_pool_bin) of that bin's own input channel, and its backward, which
// spreads each bin's gradient evenly over the bin's pixels.
//
// Each bin is computed once per call; the drivers of ps_roi_pooling.h sum its pixels for every
// output channel, in row-major order and divided by the area, which is torchvision's
// arithmetic: float32 and float64 results equal torchvision's exactly. Deterministic: the backward
// has one writer per element.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "common/checks.h"
#include "common/memory_format.h"
#include "common/ps_roi_math.h"
#include "cpu/ps_roi_pooling.h"
#include "cpu/vectorized_layout.h"

namespace roiops {
namespace cpu {
namespace {

// Bin (ph, pw) of a RoI: its pixels with weight 1, divided by their count; no taps when empty.
// Computed where it is summed: each (RoI, bin) is visited once per call, inside the drivers'
// parallel region, so a separate pass over all bins would only add a synchronisation.
template <typename scalar_t, typename acc_t>
struct PoolBins {
  const scalar_t* rois;  // [K, 5] contiguous
  acc_t spatial_scale;
  int64_t pooled_height, pooled_width, height, width;
  void operator()(int64_t k, int64_t ph, int64_t pw, int64_t stride_h, int64_t stride_w, BinTaps<acc_t>& b) const {
    const scalar_t* roi = rois + 5 * k;
    const PoolBin bin = ps_roi_pool_bin(static_cast<acc_t>(roi[1]), static_cast<acc_t>(roi[2]),
                                        static_cast<acc_t>(roi[3]), static_cast<acc_t>(roi[4]), spatial_scale, ph,
                                        pw, pooled_height, pooled_width, height, width);
    b.clear();
    if (bin.empty()) {
      return;
    }
    b.resize(static_cast<size_t>((bin.h_end - bin.h_start) * (bin.w_end - bin.w_start)));
    int64_t* offset = b.offset.data();
    for (int64_t h = bin.h_start; h < bin.h_end; ++h) {
      for (int64_t w = bin.w_start; w < bin.w_end; ++w) {
        *offset++ = h * stride_h + w * stride_w;
      }
    }
    std::fill(b.weight.begin(), b.weight.end(), acc_t(1));
    b.divisor = static_cast<acc_t>((bin.h_end - bin.h_start) * (bin.w_end - bin.w_start));
  }
};

at::Tensor ps_roi_pool_forward_cpu(const at::Tensor& input, const at::Tensor& rois_in, double spatial_scale,
                                   int64_t pooled_height, int64_t pooled_width) {
  const int64_t channels_out =
      check_ps_roi_args("ps_roi_pool", input, rois_in, spatial_scale, pooled_height, pooled_width);
  const auto format = memory_format_for(use_channels_last(input));
  const at::Tensor rois = rois_in.contiguous();
  const int64_t num_rois = rois.size(0);
  at::Tensor out =
      at::empty({num_rois, channels_out, pooled_height, pooled_width}, input.options().memory_format(format));
  if (num_rois == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "ps_roi_pool_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const std::vector<int64_t> batch = ps_roi_batch_indices<scalar_t>("ps_roi_pool", rois, input.size(0));
    if (out.numel() == 0) {
      return;
    }
    ps_roi_forward_driver<scalar_t, acc_t>(input.const_data_ptr<scalar_t>(), map_strides(input), batch, input.size(0),
                                           channels_out, pooled_height, pooled_width,
                                           out.mutable_data_ptr<scalar_t>(), map_strides(out),
                                           PoolBins<scalar_t, acc_t>{rois.const_data_ptr<scalar_t>(), static_cast<acc_t>(spatial_scale),
                                                                     pooled_height, pooled_width, input.size(2),
                                                                     input.size(3)});
  });
  return out;
}

at::Tensor ps_roi_pool_backward_cpu(const at::Tensor& grad, const at::Tensor& rois_in, double spatial_scale,
                                    int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                    int64_t channels, int64_t height, int64_t width, bool channels_last) {
  const int64_t channels_out = check_ps_roi_backward_args("ps_roi_pool_backward", grad, rois_in, spatial_scale,
                                                          pooled_height, pooled_width, batch_size, channels,
                                                          height, width);
  const auto format = memory_format_for(channels_last);
  const at::ScalarType dtype = grad.scalar_type();
  const at::ScalarType acc_dtype = at::toOpMathType(dtype);
  at::Tensor grad_input =
      at::empty({batch_size, channels, height, width}, grad.options().dtype(acc_dtype).memory_format(format));
  const at::Tensor rois = rois_in.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "ps_roi_pool_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    if (rois.size(0) == 0 || grad_input.numel() == 0) {
      zero_streaming(grad_input.mutable_data_ptr<acc_t>(), grad_input.numel());
      return;
    }
    const std::vector<int64_t> batch = ps_roi_batch_indices<scalar_t>("ps_roi_pool_backward", rois, batch_size);
    ps_roi_backward_into<scalar_t, acc_t>(grad, batch, channels_out, pooled_height, pooled_width, grad_input,
                                         PoolBins<scalar_t, acc_t>{rois.const_data_ptr<scalar_t>(),
                                                                   static_cast<acc_t>(spatial_scale), pooled_height,
                                                                   pooled_width, height, width});
  });
  return acc_dtype != dtype ? grad_input.to(dtype) : grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CPU, m) {
  m.impl("ps_roi_pool", &ps_roi_pool_forward_cpu);
  m.impl("ps_roi_pool_backward", &ps_roi_pool_backward_cpu);
}

}  // namespace cpu
}  // namespace roiops
