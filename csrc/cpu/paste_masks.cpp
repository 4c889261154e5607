// Mask pasting on the CPU: each low-resolution mask is resized into its box and written into its
// own full-image plane, following the pixel model of common/paste_math.h.
//
// Work and memory are bounded by the boxes: a plane is zeroed once and only the pixels of its
// box's extent are computed; the only scratch is a few rows per thread. Each mask is independent,
// so masks are split across threads (each plane is written, and first touched, by one thread).
//
// Per mask the resize follows whichever of upsample_bilinear2d's two CPU kernels torchvision's
// F.interpolate call would run (see paste_math.h). In the separable one every padded-mask row is
// first blended along x at the box's columns (S rows x w values), then each output row blends
// two of those rows along y, a straight vectorizable loop.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#include "common/checks.h"
#include "common/paste_math.h"

namespace roiops {
namespace {

template <typename box_t>
std::vector<PasteExtent> paste_extents(const at::Tensor& boxes, int64_t mask_h, int64_t mask_w) {
  using acc_t = at::opmath_type<box_t>;
  const int64_t n = boxes.size(0);
  const box_t* b = boxes.const_data_ptr<box_t>();
  // torchvision's scale (M + 2 * padding) / M, a Python float, rounded to the boxes' type.
  const acc_t scale_x = static_cast<acc_t>(static_cast<double>(mask_w + 2) / mask_w);
  const acc_t scale_y = static_cast<acc_t>(static_cast<double>(mask_h + 2) / mask_h);
  std::vector<PasteExtent> extents(n);
  for (int64_t i = 0; i < n; ++i) {
    extents[i] = paste_extent<acc_t>(b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3], scale_x, scale_y);
  }
  return extents;
}

template <typename scalar_t, typename out_t>
void paste_masks_kernel_cpu(const at::Tensor& masks, const std::vector<PasteExtent>& extents, int64_t image_h,
                            int64_t image_w, std::optional<double> threshold, at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t n = masks.size(0);
  const int64_t mask_h = masks.size(1), mask_w = masks.size(2);
  const int64_t padded_h = mask_h + 2, padded_w = mask_w + 2;
  const scalar_t* mask_data = masks.const_data_ptr<scalar_t>();
  out_t* out_data = out.mutable_data_ptr<out_t>();
  const int64_t plane = image_h * image_w;
  const acc_t thr = threshold.has_value() ? static_cast<acc_t>(*threshold) : acc_t(0);

  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> col0, col1;
    std::vector<acc_t> colw0, colw1, rows, padded, line;
    for (int64_t i = begin; i < end; ++i) {
      out_t* canvas = out_data + i * plane;
      std::memset(canvas, 0, plane * sizeof(out_t));
      const PasteExtent& e = extents[i];
      if (!e.valid) {
        continue;
      }
      // The part of the patch (x0..x1, y0..y1 inclusive) that lies inside the image.
      const int64_t x_lo = std::max<int64_t>(e.x0, 0), x_hi = std::min<int64_t>(e.x1 + 1, image_w);
      const int64_t y_lo = std::max<int64_t>(e.y0, 0), y_hi = std::min<int64_t>(e.y1 + 1, image_h);
      if (x_lo >= x_hi || y_lo >= y_hi) {
        continue;
      }
      const int64_t cols = x_hi - x_lo;
      col0.resize(cols);
      col1.resize(cols);
      colw0.resize(cols);
      colw1.resize(cols);
      for (int64_t c = 0; c < cols; ++c) {
        paste_source_index<acc_t>(x_lo + c - e.x0, padded_w, e.width, &col0[c], &col1[c], &colw0[c], &colw1[c]);
      }
      // The zero-padded mask, in acc_t.
      const scalar_t* mask = mask_data + i * mask_h * mask_w;
      padded.resize(padded_h * padded_w);
      for (int64_t py = 0; py < padded_h; ++py) {
        for (int64_t px = 0; px < padded_w; ++px) {
          padded[py * padded_w + px] = static_cast<acc_t>(padded_mask_at(mask, mask_h, mask_w, py, px));
        }
      }
      const bool four_tap = paste_uses_four_tap(e.height, e.width);
      if (!four_tap) {
        // Every padded row blended along x at this box's columns, once.
        rows.resize(padded_h * cols);
        for (int64_t py = 0; py < padded_h; ++py) {
          const acc_t* src = padded.data() + py * padded_w;
          acc_t* row = rows.data() + py * cols;
          for (int64_t c = 0; c < cols; ++c) {
            row[c] = paste_lerp(src[col0[c]], src[col1[c]], colw0[c], colw1[c]);
          }
        }
      }
      for (int64_t y = y_lo; y < y_hi; ++y) {
        int64_t r0, r1;
        acc_t wy0, wy1;
        paste_source_index<acc_t>(y - e.y0, padded_h, e.height, &r0, &r1, &wy0, &wy1);
        line.resize(cols);
        acc_t* value = line.data();
        if (four_tap) {
          const acc_t* top = padded.data() + r0 * padded_w;
          const acc_t* bottom = padded.data() + r1 * padded_w;
          for (int64_t c = 0; c < cols; ++c) {
            value[c] = paste_blend_four_tap(top[col0[c]], top[col1[c]], bottom[col0[c]], bottom[col1[c]],
                                            colw0[c], colw1[c], wy0, wy1);
          }
        } else {
          const acc_t* top = rows.data() + r0 * cols;
          const acc_t* bottom = rows.data() + r1 * cols;
#pragma omp simd
          for (int64_t c = 0; c < cols; ++c) {
            value[c] = paste_lerp(top[c], bottom[c], wy0, wy1);
          }
        }
        out_t* dst = canvas + y * image_w + x_lo;
        if (threshold.has_value()) {
#pragma omp simd
          for (int64_t c = 0; c < cols; ++c) {
            // Rounded to the mask dtype first, as torchvision's resized mask is.
            dst[c] = static_cast<out_t>(static_cast<acc_t>(static_cast<scalar_t>(value[c])) > thr);
          }
        } else {
#pragma omp simd
          for (int64_t c = 0; c < cols; ++c) {
            dst[c] = static_cast<out_t>(value[c]);
          }
        }
      }
    }
  });
}

at::Tensor paste_masks_cpu(const at::Tensor& masks_in, const at::Tensor& boxes_in, int64_t image_height,
                           int64_t image_width, std::optional<double> threshold) {
  // The Python wrapper validates; these checks only guard direct torch.ops calls.
  check_paste_masks(masks_in, boxes_in, image_height, image_width);
  const at::Tensor masks = masks_in.contiguous();
  const at::Tensor boxes = boxes_in.contiguous();
  const int64_t n = masks.size(0);
  const auto out_dtype = threshold.has_value() ? at::kBool : masks.scalar_type();
  at::Tensor out = at::empty({n, image_height, image_width}, masks.options().dtype(out_dtype));
  if (out.numel() == 0) {
    return out;
  }
  std::vector<PasteExtent> extents;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes.scalar_type(), "paste_masks_cpu_boxes", [&] {
    extents = paste_extents<scalar_t>(boxes, masks.size(1), masks.size(2));
  });
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, masks.scalar_type(), "paste_masks_cpu", [&] {
    if (threshold.has_value()) {
      paste_masks_kernel_cpu<scalar_t, bool>(masks, extents, image_height, image_width, threshold, out);
    } else {
      paste_masks_kernel_cpu<scalar_t, scalar_t>(masks, extents, image_height, image_width, threshold, out);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CPU, m) {
  m.impl("paste_masks", &paste_masks_cpu);
}

}  // namespace roiops
