// The results of roi_align_backward_rois_backward (the second derivatives through RoIAlign's box
// gradient), allocated and finished alike by the CPU and CUDA drivers. Host code only.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>

#include <cstdint>
#include <tuple>
#include <vector>

#include "common/memory_format.h"

namespace roiops {

// The kernels accumulate d rois and d features in the accumulation dtype (float32 for the half
// types) and round them once at the end; d grad is written directly in grad's dtype.
struct BoxSecondOrderResults {
  at::Tensor d_grad;                    // grad's shape, dtype and memory format (empty_like keeps it)
  std::vector<at::Tensor> d_features;   // one zero-filled map per feature, in its memory format; none
                                        // unless features_grad
  at::Tensor d_rois;                    // [K, 5], zero-filled: column 0 (the batch index) stays 0

  BoxSecondOrderResults(const at::Tensor& grad, const std::vector<at::Tensor>& features, const at::Tensor& rois,
                        bool features_grad)
      : d_grad(at::empty_like(grad)),
        d_rois(at::zeros({rois.size(0), 5}, rois.options().dtype(at::toOpMathType(features[0].scalar_type())))) {
    if (features_grad) {
      for (const at::Tensor& f : features) {
        // at::empty + zero_, not at::zeros: at::zeros ignores the memory format.
        d_features.push_back(at::empty(f.sizes(), f.options()
                                                      .dtype(at::toOpMathType(f.scalar_type()))
                                                      .memory_format(memory_format_for(use_channels_last(f))))
                                 .zero_());
      }
    }
  }

  // (d grad, d features, d rois), d features and d rois rounded to dtype (memory formats kept).
  std::tuple<at::Tensor, std::vector<at::Tensor>, at::Tensor> finish(at::ScalarType dtype) {
    if (d_rois.scalar_type() != dtype) {
      d_rois = d_rois.to(dtype);
      for (at::Tensor& d : d_features) {
        d = d.to(dtype);  // keeps the memory format
      }
    }
    return {d_grad, d_features, d_rois};
  }
};

}  // namespace roiops
