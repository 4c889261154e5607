// Mask pasting on CUDA, on the pixel model of common/paste_math.h (torchvision's
// paste_masks_in_image, operation for operation, as the CPU kernel).
//
// Two launches: one thread per mask computes its integer extent in the image (in the boxes' own
// precision), then one thread per image pixel writes either 0 (outside the mask's extent) or the
// bilinear resize of the zero-padded mask at that pixel, rounded as the CPU kernel rounds it
// (paste_uses_four_tap picks PyTorch's four-tap or separable order), thresholded when asked.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <optional>

#include "common/checks.h"
#include "common/paste_math.h"
#include "cuda/launch.cuh"

namespace roiops {
namespace {

// extents: [N] PasteExtent. box_t is float or double (half boxes are widened first, which is
// exact and what paste_extent's float arithmetic does with them anyway).
template <typename box_t>
__global__ void paste_extents_kernel_cuda(const box_t* __restrict__ boxes, int64_t n, box_t scale_x, box_t scale_y,
                                          PasteExtent* __restrict__ extents) {
  for (const int64_t i : grid_stride_range(n)) {
    extents[i] = paste_extent<box_t>(boxes[4 * i], boxes[4 * i + 1], boxes[4 * i + 2], boxes[4 * i + 3], scale_x,
                                     scale_y);
  }
}

template <typename scalar_t, typename out_t, bool kThreshold>
__global__ void paste_masks_kernel_cuda(const scalar_t* __restrict__ masks, int64_t mask_h, int64_t mask_w,
                                        const PasteExtent* __restrict__ extents, int64_t n, int64_t image_h,
                                        int64_t image_w, at::opmath_type<scalar_t> threshold,
                                        out_t* __restrict__ out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t plane = image_h * image_w;
  const int64_t total = n * plane;
  const int64_t padded_h = mask_h + 2, padded_w = mask_w + 2;
  for (const int64_t idx : grid_stride_range(total)) {
    const int64_t i = idx / plane;
    const int64_t y = (idx % plane) / image_w;
    const int64_t x = idx % image_w;
    const PasteExtent e = extents[i];
    if (!e.valid || x < e.x0 || x > e.x1 || y < e.y0 || y > e.y1) {
      out[idx] = out_t(0);
      continue;
    }
    int64_t c0, c1, r0, r1;
    acc_t wx0, wx1, wy0, wy1;
    paste_source_index<acc_t>(x - e.x0, padded_w, e.width, &c0, &c1, &wx0, &wx1);
    paste_source_index<acc_t>(y - e.y0, padded_h, e.height, &r0, &r1, &wy0, &wy1);
    const scalar_t* mask = masks + i * mask_h * mask_w;
    const acc_t v00 = static_cast<acc_t>(padded_mask_at(mask, mask_h, mask_w, r0, c0));
    const acc_t v01 = static_cast<acc_t>(padded_mask_at(mask, mask_h, mask_w, r0, c1));
    const acc_t v10 = static_cast<acc_t>(padded_mask_at(mask, mask_h, mask_w, r1, c0));
    const acc_t v11 = static_cast<acc_t>(padded_mask_at(mask, mask_h, mask_w, r1, c1));
    // The same rounding as the CPU kernel (and PyTorch's upsample_bilinear2d), by patch size.
    const acc_t v = paste_uses_four_tap(e.height, e.width)
                        ? paste_blend_four_tap(v00, v01, v10, v11, wx0, wx1, wy0, wy1)
                        : paste_lerp(paste_lerp(v00, v01, wx0, wx1), paste_lerp(v10, v11, wx0, wx1), wy0, wy1);
    if (kThreshold) {
      // Rounded to the mask dtype first, as torchvision's resized mask is.
      out[idx] = static_cast<out_t>(static_cast<acc_t>(static_cast<scalar_t>(v)) > threshold);
    } else {
      out[idx] = static_cast<out_t>(v);
    }
  }
}

at::Tensor paste_masks_cuda(const at::Tensor& masks_in, const at::Tensor& boxes_in, int64_t image_height,
                            int64_t image_width, std::optional<double> threshold) {
  // The Python wrapper validates; these checks guard direct torch.ops calls.
  check_paste_masks(masks_in, boxes_in, image_height, image_width);
  TORCH_CHECK(masks_in.is_cuda(), "paste_masks: masks must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(masks_in.device());
  const at::Tensor masks = masks_in.contiguous();
  const int64_t n = masks.size(0);
  const int64_t mask_h = masks.size(1), mask_w = masks.size(2);
  const auto out_dtype = threshold.has_value() ? at::kBool : masks.scalar_type();
  at::Tensor out = at::empty({n, image_height, image_width}, masks.options().dtype(out_dtype));
  if (out.numel() == 0) {
    return out;
  }
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  // Extents in the boxes' precision: double boxes in double, the others in float.
  static_assert(sizeof(PasteExtent) % 8 == 0, "PasteExtent is stored in an int64 buffer");
  at::Tensor extents = at::empty({n, static_cast<int64_t>(sizeof(PasteExtent) / 8)}, masks.options().dtype(at::kLong));
  auto* extent_ptr = reinterpret_cast<PasteExtent*>(extents.mutable_data_ptr<int64_t>());
  const bool double_boxes = boxes_in.scalar_type() == at::kDouble;
  const at::Tensor boxes = boxes_in.to(double_boxes ? at::kDouble : at::kFloat).contiguous();
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "paste_extents_cuda", [&] {
    // torchvision's scale (M + 2 * padding) / M, a Python float, rounded to the boxes' type.
    const scalar_t scale_x = static_cast<scalar_t>(static_cast<double>(mask_w + 2) / mask_w);
    const scalar_t scale_y = static_cast<scalar_t>(static_cast<double>(mask_h + 2) / mask_h);
    paste_extents_kernel_cuda<scalar_t><<<grid_for(n), kThreads, 0, stream>>>(
        boxes.const_data_ptr<scalar_t>(), n, scale_x, scale_y, extent_ptr);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, masks.scalar_type(), "paste_masks_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    if (threshold.has_value()) {
      paste_masks_kernel_cuda<scalar_t, bool, true><<<grid_for(out.numel()), kThreads, 0, stream>>>(
          masks.const_data_ptr<scalar_t>(), mask_h, mask_w, extent_ptr, n, image_height, image_width,
          static_cast<acc_t>(*threshold), out.mutable_data_ptr<bool>());
    } else {
      paste_masks_kernel_cuda<scalar_t, scalar_t, false><<<grid_for(out.numel()), kThreads, 0, stream>>>(
          masks.const_data_ptr<scalar_t>(), mask_h, mask_w, extent_ptr, n, image_height, image_width, acc_t(0),
          out.mutable_data_ptr<scalar_t>());
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CUDA, m) {
  m.impl("paste_masks", &paste_masks_cuda);
}

}  // namespace roiops
