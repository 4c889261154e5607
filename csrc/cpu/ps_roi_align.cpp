// Position-sensitive RoIAlign (Dai et al., R-FCN; bilinear sampling as in He et al., Mask R-CNN) on
// the CPU: forward and backward to the input.
//
// The sample positions and bilinear weights of every RoI are RoIAlign's (roi_align_taps.h, with
// aligned=True's half-pixel shift, which PSRoIAlign always applies), computed once per RoI; a bin
// turns them into its 4 * samples weighted pixels (BinTaps) and the drivers of ps_roi_pooling.h
// sum them for every output channel. Deterministic: the backward has one writer per element.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <vector>

#include "common/checks.h"
#include "common/memory_format.h"
#include "common/ps_roi_math.h"
#include "cpu/ps_roi_pooling.h"
#include "cpu/roi_align_taps.h"
#include "cpu/vectorized_layout.h"

namespace roiops {
namespace cpu {
namespace {

// The taps of every RoI (raises for a bad batch index) with its batch index.
template <typename scalar_t, typename acc_t>
std::vector<RoiTaps<acc_t>> ps_align_taps(const char* op, const at::Tensor& rois, int64_t batch_size,
                                          int64_t height, int64_t width, double spatial_scale, int64_t pooled_height,
                                          int64_t pooled_width, int64_t sampling_ratio,
                                          std::vector<int64_t>& batch) {
  const std::vector<LevelShape> shapes{{height, width, spatial_scale}};
  auto taps = build_roi_taps<scalar_t, acc_t>(op, rois, nullptr, shapes, batch_size, pooled_height, pooled_width,
                                              sampling_ratio, /*aligned=*/true);
  batch.resize(taps.size());
  for (size_t k = 0; k < taps.size(); ++k) {
    batch[k] = taps[k].batch;
  }
  return taps;
}

// Bin (ph, pw) of a RoI: the four corners of each of its samples, weighted, averaged.
template <typename acc_t>
struct AlignBins {
  const std::vector<RoiTaps<acc_t>>& taps;
  void operator()(int64_t k, int64_t ph, int64_t pw, int64_t stride_h, int64_t stride_w, BinTaps<acc_t>& b) const {
    const RoiTaps<acc_t>& t = taps[k];
    b.clear();
    b.scale = t.inv_count;
    for (int32_t iy = t.y_begin[ph]; iy < t.y_begin[ph + 1]; ++iy) {
      const Tap<acc_t>& ty = t.ys[iy];
      for (int32_t ix = t.x_begin[pw]; ix < t.x_begin[pw + 1]; ++ix) {
        const Tap<acc_t>& tx = t.xs[ix];
        b.add(ty.low * stride_h + tx.low * stride_w, ty.w_low * tx.w_low);
        b.add(ty.low * stride_h + tx.high * stride_w, ty.w_low * tx.w_high);
        b.add(ty.high * stride_h + tx.low * stride_w, ty.w_high * tx.w_low);
        b.add(ty.high * stride_h + tx.high * stride_w, ty.w_high * tx.w_high);
      }
    }
  }
};

at::Tensor ps_roi_align_forward_cpu(const at::Tensor& input, const at::Tensor& rois_in, double spatial_scale,
                                    int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio) {
  const int64_t channels_out =
      check_ps_roi_args("ps_roi_align", input, rois_in, spatial_scale, pooled_height, pooled_width);
  const auto format = memory_format_for(use_channels_last(input));
  const at::Tensor rois = rois_in.contiguous();
  const int64_t num_rois = rois.size(0);
  at::Tensor out =
      at::empty({num_rois, channels_out, pooled_height, pooled_width}, input.options().memory_format(format));
  if (num_rois == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "ps_roi_align_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    std::vector<int64_t> batch;
    const auto taps = ps_align_taps<scalar_t, acc_t>("ps_roi_align", rois, input.size(0), input.size(2),
                                                     input.size(3), spatial_scale, pooled_height, pooled_width,
                                                     sampling_ratio, batch);
    if (out.numel() == 0) {
      return;
    }
    ps_roi_forward_driver<scalar_t, acc_t>(input.const_data_ptr<scalar_t>(), map_strides(input), batch, input.size(0),
                                           channels_out, pooled_height, pooled_width,
                                           out.mutable_data_ptr<scalar_t>(), map_strides(out),
                                           AlignBins<acc_t>{taps});
  });
  return out;
}

at::Tensor ps_roi_align_backward_cpu(const at::Tensor& grad, const at::Tensor& rois_in, double spatial_scale,
                                     int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                     int64_t batch_size, int64_t channels, int64_t height, int64_t width,
                                     bool channels_last) {
  const int64_t channels_out = check_ps_roi_backward_args("ps_roi_align_backward", grad, rois_in, spatial_scale,
                                                          pooled_height, pooled_width, batch_size, channels,
                                                          height, width);
  const auto format = memory_format_for(channels_last);
  const at::ScalarType dtype = grad.scalar_type();
  const at::ScalarType acc_dtype = at::toOpMathType(dtype);
  at::Tensor grad_input =
      at::empty({batch_size, channels, height, width}, grad.options().dtype(acc_dtype).memory_format(format));
  const at::Tensor rois = rois_in.contiguous();
  const bool in_task_zero = !channels_last && rois.size(0) > 0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "ps_roi_align_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    if (!in_task_zero) {
      zero_streaming(grad_input.mutable_data_ptr<acc_t>(), grad_input.numel());
    }
    if (rois.size(0) == 0 || grad_input.numel() == 0) {
      return;
    }
    std::vector<int64_t> batch;
    const auto taps = ps_align_taps<scalar_t, acc_t>("ps_roi_align_backward", rois, batch_size, height, width,
                                                     spatial_scale, pooled_height, pooled_width, sampling_ratio,
                                                     batch);
    ps_roi_backward_driver<scalar_t, acc_t>(grad.const_data_ptr<scalar_t>(), map_strides(grad), batch, batch_size,
                                            channels_out, pooled_height, pooled_width,
                                            grad_input.mutable_data_ptr<acc_t>(), map_strides(grad_input),
                                            height * width, in_task_zero, AlignBins<acc_t>{taps});
  });
  return acc_dtype != dtype ? grad_input.to(dtype) : grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CPU, m) {
  m.impl("ps_roi_align", &ps_roi_align_forward_cpu);
  m.impl("ps_roi_align_backward", &ps_roi_align_backward_cpu);
}

}  // namespace cpu
}  // namespace roiops
