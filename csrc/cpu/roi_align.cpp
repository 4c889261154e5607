// RoIAlign (He et al., Mask R-CNN) on the CPU: forward, backward to the input, backward to the
// box coordinates and the second derivatives through that. The kernels are in roi_align_kernels.h (shared with the FPN pooler); this file
// checks arguments, picks the memory format, allocates and dispatches on dtype.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include "common/checks.h"
#include "cpu/roi_align_kernels.h"

namespace roiops {
namespace cpu {

bool use_channels_last(const at::Tensor& input) {
  return input.dim() == 4 && !input.is_contiguous() && input.is_contiguous(at::MemoryFormat::ChannelsLast);
}

namespace {

// Element strides of a 4-d tensor (any memory format), as the scalar kernels take them.
std::array<int64_t, 4> strides4(const at::Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

template <typename scalar_t>
std::vector<const scalar_t*> data_ptrs(const std::vector<at::Tensor>& tensors) {
  std::vector<const scalar_t*> ptrs;
  for (const at::Tensor& t : tensors) {
    ptrs.push_back(t.const_data_ptr<scalar_t>());
  }
  return ptrs;
}

std::vector<LevelShape> level_shapes(const std::vector<int64_t>& heights, const std::vector<int64_t>& widths,
                                     const std::vector<double>& spatial_scales) {
  std::vector<LevelShape> shapes;
  for (size_t l = 0; l < heights.size(); ++l) {
    shapes.push_back({heights[l], widths[l], spatial_scales[l]});
  }
  return shapes;
}

}  // namespace

at::Tensor roi_align_forward_levels_cpu(const char* op, const std::vector<at::Tensor>& features,
                                        const at::Tensor& rois_in, const std::vector<double>& spatial_scales,
                                        const int64_t* levels, int64_t pooled_height, int64_t pooled_width,
                                        int64_t sampling_ratio, bool aligned) {
  check_feature_maps(op, features, spatial_scales);
  check_pooled_size(op, pooled_height, pooled_width);
  const at::Tensor& first = features[0];
  check_rois(op, rois_in, first);
  const bool channels_last = use_channels_last(first);
  const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const int64_t batch_size = first.size(0), channels = first.size(1);
  std::vector<at::Tensor> inputs;
  std::vector<int64_t> heights, widths;
  for (const at::Tensor& f : features) {
    inputs.push_back(f.contiguous(format));
    heights.push_back(f.size(2));
    widths.push_back(f.size(3));
  }
  const std::vector<LevelShape> shapes = level_shapes(heights, widths, spatial_scales);
  const at::Tensor rois = rois_in.contiguous();
  const int64_t num_rois = rois.size(0);
  at::Tensor out = at::empty({num_rois, channels, pooled_height, pooled_width},
                             first.options().memory_format(format));
  if (num_rois == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, first.scalar_type(), "roi_align_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto taps = build_roi_taps<scalar_t, acc_t>(op, rois, levels, shapes, batch_size, pooled_height,
                                                      pooled_width, sampling_ratio, aligned);
    if (out.numel() == 0) {
      return;
    }
    std::vector<const scalar_t*> ptrs;
    for (const at::Tensor& f : inputs) {
      ptrs.push_back(f.const_data_ptr<scalar_t>());
    }
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    if (channels_last) {
      roi_align_forward_channels_last<scalar_t, acc_t>(taps, ptrs, shapes, channels, pooled_height,
                                                       pooled_width, o, 1, channels);
    } else {
      roi_align_forward_nchw<scalar_t, acc_t>(taps, ptrs, shapes, batch_size, channels, pooled_height,
                                              pooled_width, o);
    }
  });
  return out;
}

std::vector<at::Tensor> roi_align_backward_levels_cpu(
    const char* op, const at::Tensor& grad_in, const at::Tensor& rois_in, const std::vector<double>& spatial_scales,
    const int64_t* levels, int64_t batch_size, int64_t channels, const std::vector<int64_t>& heights,
    const std::vector<int64_t>& widths, int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
    bool aligned, bool channels_last) {
  check_pooled_size(op, pooled_height, pooled_width);
  check_rois(op, rois_in, grad_in);
  const int64_t num_rois = rois_in.size(0);
  check_pooled_grad(op, grad_in, rois_in, num_rois, channels, pooled_height, pooled_width);
  check_spatial_scales(op, spatial_scales);
  const std::vector<LevelShape> shapes = level_shapes(heights, widths, spatial_scales);
  const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::ScalarType dtype = grad_in.scalar_type();
  const bool half = dtype == at::kHalf || dtype == at::kBFloat16;
  const at::ScalarType acc_dtype = half ? at::kFloat : dtype;
  std::vector<at::Tensor> grads;
  auto make = [&](int64_t l, at::ScalarType t) {
    return at::empty({batch_size, channels, heights[l], widths[l]}, grad_in.options().dtype(t).memory_format(format));
  };
  for (size_t l = 0; l < heights.size(); ++l) {
    grads.push_back(make(l, dtype));
  }
  if (num_rois == 0 || channels == 0) {
    for (at::Tensor& g : grads) {
      g.zero_();
    }
    return grads;
  }
  const at::Tensor rois = rois_in.contiguous();
  const at::Tensor grad = grad_in.contiguous(format);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "roi_align_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto taps = build_roi_taps<scalar_t, acc_t>(op, rois, levels, shapes, batch_size, pooled_height,
                                                      pooled_width, sampling_ratio, aligned);
    if (!channels_last) {
      // Writes every element of the result, accumulating in acc_t internally.
      std::vector<scalar_t*> ptrs;
      for (at::Tensor& g : grads) {
        ptrs.push_back(g.mutable_data_ptr<scalar_t>());
      }
      roi_align_backward_nchw<scalar_t, acc_t>(taps, grad.const_data_ptr<scalar_t>(), ptrs, shapes, batch_size,
                                               channels, pooled_height, pooled_width);
      return;
    }
    // channels_last: accumulates into a zero-filled buffer, the result itself unless the dtype is a
    // half type (then float32, rounded once at the end). at::empty (at::zeros drops the memory
    // format), then zero_streaming.
    std::vector<at::Tensor> buffers;
    std::vector<acc_t*> ptrs;
    for (size_t l = 0; l < grads.size(); ++l) {
      buffers.push_back(half ? make(l, acc_dtype) : grads[l]);
      zero_streaming(buffers.back().mutable_data_ptr<acc_t>(), buffers.back().numel());
      ptrs.push_back(buffers.back().mutable_data_ptr<acc_t>());
    }
    roi_align_backward_channels_last<scalar_t, acc_t>(taps, grad.const_data_ptr<scalar_t>(), 1, channels, ptrs,
                                                      shapes, batch_size, channels, pooled_height, pooled_width);
    if (half) {
      for (size_t l = 0; l < grads.size(); ++l) {
        grads[l].copy_(buffers[l]);
      }
    }
  });
  return grads;
}

at::Tensor roi_align_backward_rois_levels_cpu(const char* op, const at::Tensor& grad,
                                              const std::vector<at::Tensor>& features, const at::Tensor& rois_in,
                                              const std::vector<double>& spatial_scales, const int64_t* levels,
                                              int64_t pooled_height, int64_t pooled_width,
                                              int64_t sampling_ratio, bool aligned) {
  check_feature_maps(op, features, spatial_scales);
  check_pooled_size(op, pooled_height, pooled_width);
  const at::Tensor& first = features[0];
  check_rois(op, rois_in, first);
  const int64_t num_rois = rois_in.size(0), batch_size = first.size(0), channels = first.size(1);
  check_pooled_grad(op, grad, first, num_rois, channels, pooled_height, pooled_width);
  std::vector<int64_t> heights, widths;
  std::vector<std::array<int64_t, 4>> strides;
  for (const at::Tensor& f : features) {
    heights.push_back(f.size(2));
    widths.push_back(f.size(3));
    strides.push_back(strides4(f));
  }
  const std::vector<LevelShape> shapes = level_shapes(heights, widths, spatial_scales);
  const at::Tensor rois = rois_in.contiguous();
  const at::ScalarType dtype = first.scalar_type();
  const bool half = dtype == at::kHalf || dtype == at::kBFloat16;
  at::Tensor out = at::zeros({num_rois, 5}, rois.options().dtype(half ? at::kFloat : dtype));
  if (num_rois > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "roi_align_backward_rois_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const auto taps = build_roi_taps<scalar_t, acc_t>(op, rois, levels, shapes, batch_size, pooled_height,
                                                        pooled_width, sampling_ratio, aligned);
      roi_align_backward_rois_any<scalar_t, acc_t>(taps, grad.const_data_ptr<scalar_t>(), strides4(grad).data(),
                                                   data_ptrs<scalar_t>(features), strides,
                                                   channels, pooled_height, pooled_width,
                                                   out.mutable_data_ptr<acc_t>());
    });
  }
  return half ? out.to(dtype) : out;
}

std::tuple<at::Tensor, std::vector<at::Tensor>, at::Tensor> roi_align_backward_rois_backward_levels_cpu(
    const char* op, const at::Tensor& grad_in, const std::vector<at::Tensor>& features, const at::Tensor& rois_in,
    const at::Tensor& grad_grad_rois, const std::vector<double>& spatial_scales, const int64_t* levels,
    int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned, bool features_grad) {
  check_feature_maps(op, features, spatial_scales);
  check_pooled_size(op, pooled_height, pooled_width);
  const at::Tensor& first = features[0];
  check_rois(op, rois_in, first);
  const int64_t num_rois = rois_in.size(0), batch_size = first.size(0), channels = first.size(1);
  check_pooled_grad(op, grad_in, first, num_rois, channels, pooled_height, pooled_width);
  TORCH_CHECK_VALUE(grad_grad_rois.sizes() == rois_in.sizes(), op, ": grad_grad_rois must be [K, 5] like rois, got ",
                    grad_grad_rois.sizes());
  TORCH_CHECK_VALUE(grad_grad_rois.scalar_type() == rois_in.scalar_type() && grad_grad_rois.device() == rois_in.device(),
                    op, ": grad_grad_rois must have the dtype and device of rois");
  const at::Tensor rois = rois_in.contiguous();
  const at::Tensor directions = grad_grad_rois.contiguous();
  const at::ScalarType dtype = first.scalar_type();
  const at::ScalarType acc_dtype = at::toOpMathType(dtype);
  // d grad takes grad's memory format (empty_like preserves it), d rois that of rois.
  at::Tensor d_grad = at::empty_like(grad_in);
  at::Tensor d_rois = at::zeros({num_rois, 5}, rois.options().dtype(acc_dtype));
  std::vector<at::Tensor> d_features;
  std::vector<std::array<int64_t, 4>> strides, d_strides;
  for (const at::Tensor& f : features) {
    strides.push_back(strides4(f));
    if (features_grad) {
      // acc_t maps in the feature's memory format, rounded to dtype at the end for the half types.
      d_features.push_back(at::zeros_like(
          f, f.options().dtype(acc_dtype),
          use_channels_last(f) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
      const at::Tensor& d = d_features.back();
      d_strides.push_back(strides4(d));
    }
  }
  std::vector<LevelShape> shapes;
  for (size_t l = 0; l < features.size(); ++l) {
    shapes.push_back({features[l].size(2), features[l].size(3), spatial_scales[l]});
  }
  if (num_rois > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "roi_align_backward_rois_backward_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const auto taps = build_roi_taps<scalar_t, acc_t>(op, rois, levels, shapes, batch_size, pooled_height,
                                                        pooled_width, sampling_ratio, aligned);
      const auto gs = strides4(grad_in);
      roi_align_box_second_order_per_roi<scalar_t, acc_t>(
          taps, grad_in.const_data_ptr<scalar_t>(), gs.data(), directions.const_data_ptr<scalar_t>(),
          data_ptrs<scalar_t>(features), strides, channels, pooled_height, pooled_width,
          d_grad.mutable_data_ptr<scalar_t>(), strides4(d_grad).data(), d_rois.mutable_data_ptr<acc_t>());
      if (features_grad) {
        std::vector<acc_t*> outs;
        for (at::Tensor& d : d_features) {
          outs.push_back(d.mutable_data_ptr<acc_t>());
        }
        roi_align_box_second_order_to_input<scalar_t, acc_t>(taps, grad_in.const_data_ptr<scalar_t>(), gs.data(),
                                                             directions.const_data_ptr<scalar_t>(), outs, d_strides,
                                                             batch_size, channels, pooled_height, pooled_width);
      }
    });
  } else {
    d_grad.zero_();
  }
  if (acc_dtype != dtype) {
    d_rois = d_rois.to(dtype);
    for (at::Tensor& d : d_features) {
      d = d.to(dtype);  // keeps the memory format
    }
  }
  return {d_grad, d_features, d_rois};
}

namespace {

at::Tensor roi_align_forward_cpu(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                 int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                 bool aligned) {
  return roi_align_forward_levels_cpu("roi_align", {input}, rois, {spatial_scale}, nullptr, pooled_height,
                                      pooled_width, sampling_ratio, aligned);
}

at::Tensor roi_align_backward_cpu(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                  int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                  int64_t channels, int64_t height, int64_t width, int64_t sampling_ratio,
                                  bool aligned, bool channels_last) {
  return roi_align_backward_levels_cpu("roi_align_backward", grad, rois, {spatial_scale}, nullptr, batch_size,
                                       channels, {height}, {width}, pooled_height, pooled_width,
                                       sampling_ratio, aligned, channels_last)[0];
}

at::Tensor roi_align_backward_rois_cpu(const at::Tensor& grad, const at::Tensor& input, const at::Tensor& rois,
                                       double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                                       int64_t sampling_ratio, bool aligned) {
  return roi_align_backward_rois_levels_cpu("roi_align_backward_rois", grad, {input}, rois, {spatial_scale},
                                            nullptr, pooled_height, pooled_width, sampling_ratio, aligned);
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CPU, m) {
  m.impl("roi_align", &roi_align_forward_cpu);
  m.impl("roi_align_backward", &roi_align_backward_cpu);
  m.impl("roi_align_backward_rois", &roi_align_backward_rois_cpu);
}

}  // namespace cpu
}  // namespace roiops
