// winograd_conv3x3 on CUDA: cuDNN's convolution with the untransformed weight. cuDNN picks its own
// algorithm per shape (Winograd among them where it pays), so a kernel of ours would add nothing;
// the op exists on CUDA so that a model prepared for the CPU (roiops.WinogradConv3x3) runs there too.

#include <ATen/core/Tensor.h>
#include <ATen/ops/conv2d.h>
#include <ATen/ops/relu.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <optional>

#include "common/checks.h"

namespace roiops {
namespace {

at::Tensor winograd_conv3x3_cuda(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& weight_winograd,
                                 const std::optional<at::Tensor>& bias, bool relu) {
  check_winograd_conv3x3_args(input, weight, weight_winograd, bias);
  const c10::cuda::CUDAGuard device_guard(input.device());
  at::Tensor out = at::conv2d(input.contiguous(at::MemoryFormat::ChannelsLast),
                              weight.contiguous(at::MemoryFormat::ChannelsLast), bias, {1, 1}, {1, 1});
  if (relu) {
    out = at::relu(out);
  }
  return out.contiguous(at::MemoryFormat::ChannelsLast);
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CUDA, m) { m.impl("winograd_conv3x3", &winograd_conv3x3_cuda); }

}  // namespace roiops
