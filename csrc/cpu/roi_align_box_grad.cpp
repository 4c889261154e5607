// The backward of RoIAlign to the box coordinates on the CPU, for one map (roi_align_backward_rois)
// and an FPN pyramid (multi_scale_roi_align_backward_rois), and the second derivatives through it
// (roi_align_backward_rois_backward, for both). The taps are roi_align_taps.h's, as in the forward;
// the per-sample derivatives are common/roi_align_math.h's, as on CUDA.
//
// These kernels read the maps and the gradient in place, in any memory format, through their
// strides: they are not on the training hot path (only a loss that differentiates through the
// boxes calls them), so they favour one simple scalar walk over the vectorized layouts.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <array>
#include <cstdint>
#include <tuple>
#include <vector>

#include "common/box_grad_results.h"
#include "common/checks.h"
#include "common/memory_format.h"
#include "common/roi_align_math.h"
#include "cpu/roi_align.h"
#include "cpu/roi_align_taps.h"

namespace roiops {
namespace cpu {
namespace {

// Element strides of a 4-d tensor (any memory format), as the scalar kernels take them.
inline std::array<int64_t, 4> strides4(const at::Tensor& t) {
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

// The scalar walk of the box-gradient kernels: for every sample of bin (ph, pw) of RoI t, calls
// fn(ty, tx, v_ll, v_lh, v_hl, v_hh) with its taps and the four corner values of one channel plane
// (element strides st[2] for rows, st[3] for columns: any memory format), in acc_t.
template <typename acc_t, typename scalar_t, typename Fn>
inline void for_each_sample_corners(const RoiTaps<acc_t>& t, const scalar_t* plane, const std::array<int64_t, 4>& st,
                                    int64_t ph, int64_t pw, Fn fn) {
  for (int32_t iy = t.y_begin[ph]; iy < t.y_begin[ph + 1]; ++iy) {
    const Tap<acc_t>& ty = t.ys[iy];
    const scalar_t* row_lo = plane + ty.low * st[2];
    const scalar_t* row_hi = plane + ty.high * st[2];
    for (int32_t ix = t.x_begin[pw]; ix < t.x_begin[pw + 1]; ++ix) {
      const Tap<acc_t>& tx = t.xs[ix];
      fn(ty, tx, static_cast<acc_t>(row_lo[tx.low * st[3]]), static_cast<acc_t>(row_lo[tx.high * st[3]]),
         static_cast<acc_t>(row_hi[tx.low * st[3]]), static_cast<acc_t>(row_hi[tx.high * st[3]]));
    }
  }
}

// The walk of both per-RoI kernels: parallel over RoIs, each RoI's channels and bins in order.
// Calls bin(k, plane, st, c, ph, pw, gb, &sums) with the RoI's plane of channel c (element strides
// st, any memory format), gb = grad[k, c, ph, pw] * inv_count, and the RoI's running derivative
// with respect to its box, written to box_out[5k .. 5k + 5) = (0, x1, y1, x2, y2) in acc_t at the
// end. Each RoI writes its own rows only.
template <typename scalar_t, typename acc_t, typename BinFn>
void for_each_roi_bin(const std::vector<RoiTaps<acc_t>>& taps, const scalar_t* grad, const int64_t* grad_strides,
                      const std::vector<const scalar_t*>& inputs,
                      const std::vector<std::array<int64_t, 4>>& input_strides, int64_t channels,
                      int64_t pooled_height, int64_t pooled_width, acc_t* box_out, BinFn bin) {
  const int64_t num_rois = static_cast<int64_t>(taps.size());
  at::parallel_for(0, num_rois, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const RoiTaps<acc_t>& t = taps[k];
      const auto& st = input_strides[t.level];
      const scalar_t* image = inputs[t.level] + t.batch * st[0];
      BoxCoords<acc_t> sums;
      for (int64_t c = 0; c < channels; ++c) {
        const scalar_t* plane = image + c * st[1];
        for (int64_t ph = 0; ph < pooled_height; ++ph) {
          for (int64_t pw = 0; pw < pooled_width; ++pw) {
            const acc_t gb = static_cast<acc_t>(grad[k * grad_strides[0] + c * grad_strides[1] +
                                                     ph * grad_strides[2] + pw * grad_strides[3]]) *
                             t.inv_count;
            bin(k, plane, st, c, ph, pw, gb, &sums);
          }
        }
      }
      acc_t* out = box_out + 5 * k;
      out[0] = 0;
      out[1] = sums.x1;
      out[2] = sums.y1;
      out[3] = sums.x2;
      out[4] = sums.y2;
    }
  });
}

// Rows (x1, y1, x2, y2) of a [K, 5] tensor (column 0, the batch index, dropped), in acc_t.
template <typename acc_t, typename scalar_t>
std::vector<BoxCoords<acc_t>> box_rows(const scalar_t* rows, int64_t count) {
  std::vector<BoxCoords<acc_t>> boxes(count);
  for (int64_t k = 0; k < count; ++k) {
    const scalar_t* r = rows + 5 * k;
    boxes[k] = {static_cast<acc_t>(r[1]), static_cast<acc_t>(r[2]), static_cast<acc_t>(r[3]), static_cast<acc_t>(r[4])};
  }
  return boxes;
}

// d(sum(grad * roi_align(input, rois)))/d(rois): grad_rois[k] = (0, dx1, dy1, dx2, dy2), in acc_t.
template <typename scalar_t, typename acc_t>
void roi_align_backward_rois_any(const std::vector<RoiTaps<acc_t>>& taps, const scalar_t* grad,
                                 const int64_t* grad_strides, const std::vector<const scalar_t*>& inputs,
                                 const std::vector<std::array<int64_t, 4>>& input_strides, int64_t channels,
                                 int64_t pooled_height, int64_t pooled_width, acc_t* grad_rois) {
  for_each_roi_bin(taps, grad, grad_strides, inputs, input_strides, channels, pooled_height, pooled_width, grad_rois,
                   [&](int64_t k, const scalar_t* plane, const std::array<int64_t, 4>& st, int64_t, int64_t ph,
                       int64_t pw, acc_t gb, BoxCoords<acc_t>* sums) {
                     if (gb == acc_t(0)) {
                       return;
                     }
                     for_each_sample_corners(taps[k], plane, st, ph, pw,
                                             [&](const Tap<acc_t>& ty, const Tap<acc_t>& tx, acc_t v_ll, acc_t v_lh,
                                                 acc_t v_hl, acc_t v_hh) {
                                               // A tap carries its position slopes: it is its own SY/SX.
                                               add_sample_box_gradient(ty, tx, ty, tx, gb, v_ll, v_lh, v_hl, v_hh,
                                                                       sums);
                                             });
                   });
}

// ---- second derivatives through the box gradient -----------------------------------------------
//
// The box gradient B = d<grad, roi_align(input, rois)>/d(rois), paired with the gradient that
// flows back into it (u = grad_grad_rois, [K, 5]), is
//   S = <u, B> = sum over channels, bins and samples of grad * inv_count * (d_y * move_y + d_x * move_x)
// where move_y = d_lo * u_y1 + d_hi * u_y2 is how far u moves the sample along y (likewise x).
// Its three derivatives are what the double backward needs:
// - d S/d grad: inv_count * sum (d_y * move_y + d_x * move_x) per bin, roi_align's derivative
//   along u (a forward-mode product);
// - d S/d input: S is linear in the corner values (bilinear_direction_weights), scattered like the
//   input backward;
// - d S/d rois: only the interpolation weights move with the box (slopes, d(position)/d(box) and
//   the sample counts are piecewise constant), and the only second derivative of a bilinear sample
//   is the cross one, d2/dydx.

// The first and the third: d_grad (grad's shape, any strides) and d_rois ([K, 5] in acc_t, column
// 0 zero).
template <typename scalar_t, typename acc_t>
void roi_align_box_second_order_per_roi(const std::vector<RoiTaps<acc_t>>& taps, const scalar_t* grad,
                                        const int64_t* grad_strides, const scalar_t* directions,
                                        const std::vector<const scalar_t*>& inputs,
                                        const std::vector<std::array<int64_t, 4>>& input_strides,
                                        int64_t channels, int64_t pooled_height, int64_t pooled_width,
                                        scalar_t* d_grad, const int64_t* d_grad_strides, acc_t* d_rois) {
  const std::vector<BoxCoords<acc_t>> u = box_rows<acc_t>(directions, static_cast<int64_t>(taps.size()));
  for_each_roi_bin(
      taps, grad, grad_strides, inputs, input_strides, channels, pooled_height, pooled_width, d_rois,
      [&](int64_t k, const scalar_t* plane, const std::array<int64_t, 4>& st, int64_t c, int64_t ph, int64_t pw,
          acc_t gb, BoxCoords<acc_t>* sums) {
        acc_t along = 0;  // sum of d_y * move_y + d_x * move_x over the bin's samples
        for_each_sample_corners(taps[k], plane, st, ph, pw,
                                [&](const Tap<acc_t>& ty, const Tap<acc_t>& tx, acc_t v_ll, acc_t v_lh, acc_t v_hl,
                                    acc_t v_hh) {
                                  along += add_sample_box_second_order(ty, tx, ty, tx, u[k], gb, v_ll, v_lh, v_hl,
                                                                       v_hh, sums);
                                });
        d_grad[k * d_grad_strides[0] + c * d_grad_strides[1] + ph * d_grad_strides[2] + pw * d_grad_strides[3]] =
            static_cast<scalar_t>(along * taps[k].inv_count);
      });
}

// The second: d S/d input, added into zero-filled acc_t maps (any strides, one per level).
// Parallel over (level, image, channel): each task owns one plane of one map and visits the RoIs
// in index order, so the sums do not depend on the thread count.
template <typename scalar_t, typename acc_t>
void roi_align_box_second_order_to_input(const std::vector<RoiTaps<acc_t>>& taps, const scalar_t* grad,
                                         const int64_t* grad_strides, const scalar_t* directions,
                                         const std::vector<acc_t*>& d_inputs,
                                         const std::vector<std::array<int64_t, 4>>& d_input_strides,
                                         int64_t batch_size, int64_t channels, int64_t pooled_height,
                                         int64_t pooled_width) {
  const int64_t num_levels = static_cast<int64_t>(d_inputs.size());
  const int64_t num_rois = static_cast<int64_t>(taps.size());
  const std::vector<BoxCoords<acc_t>> u = box_rows<acc_t>(directions, num_rois);
  at::parallel_for(0, num_levels * batch_size * channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t level = task / (batch_size * channels);
      const int64_t n = (task / channels) % batch_size;
      const int64_t c = task % channels;
      const auto& st = d_input_strides[level];
      acc_t* plane = d_inputs[level] + n * st[0] + c * st[1];
      for (int64_t k = 0; k < num_rois; ++k) {
        const RoiTaps<acc_t>& t = taps[k];
        if (t.level != level || t.batch != n) {
          continue;
        }
        for (int64_t ph = 0; ph < pooled_height; ++ph) {
          for (int64_t pw = 0; pw < pooled_width; ++pw) {
            const acc_t gb = static_cast<acc_t>(grad[k * grad_strides[0] + c * grad_strides[1] +
                                                     ph * grad_strides[2] + pw * grad_strides[3]]) *
                             t.inv_count;
            if (gb == acc_t(0)) {
              continue;
            }
            for (int32_t iy = t.y_begin[ph]; iy < t.y_begin[ph + 1]; ++iy) {
              const Tap<acc_t>& ty = t.ys[iy];
              const acc_t move_y = sample_move(ty, u[k].y1, u[k].y2);
              acc_t* row_lo = plane + ty.low * st[2];
              acc_t* row_hi = plane + ty.high * st[2];
              for (int32_t ix = t.x_begin[pw]; ix < t.x_begin[pw + 1]; ++ix) {
                const Tap<acc_t>& tx = t.xs[ix];
                acc_t w[4];
                bilinear_direction_weights(ty, tx, move_y, sample_move(tx, u[k].x1, u[k].x2), w);
                row_lo[tx.low * st[3]] += gb * w[0];
                row_lo[tx.high * st[3]] += gb * w[1];
                row_hi[tx.low * st[3]] += gb * w[2];
                row_hi[tx.high * st[3]] += gb * w[3];
              }
            }
          }
        }
      }
    }
  });
}

at::Tensor roi_align_backward_rois_levels_cpu(const char* op, const at::Tensor& grad,
                                              const std::vector<at::Tensor>& features, const at::Tensor& rois_in,
                                              const std::vector<double>& spatial_scales, const int64_t* levels,
                                              int64_t pooled_height, int64_t pooled_width,
                                              int64_t sampling_ratio, bool aligned) {
  check_box_grad_args(op, grad, features, spatial_scales, rois_in, pooled_height, pooled_width);
  const at::Tensor& first = features[0];
  const int64_t num_rois = rois_in.size(0), batch_size = first.size(0), channels = first.size(1);
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
  check_box_grad_args(op, grad_in, features, spatial_scales, rois_in, pooled_height, pooled_width);
  check_grad_grad_rois(op, grad_grad_rois, rois_in);
  const at::Tensor& first = features[0];
  const int64_t num_rois = rois_in.size(0), batch_size = first.size(0), channels = first.size(1);
  const at::Tensor rois = rois_in.contiguous();
  const at::Tensor directions = grad_grad_rois.contiguous();
  const at::ScalarType dtype = first.scalar_type();
  BoxSecondOrderResults results(grad_in, features, rois_in, features_grad);
  at::Tensor& d_grad = results.d_grad;
  std::vector<std::array<int64_t, 4>> strides, d_strides;
  for (const at::Tensor& f : features) {
    strides.push_back(strides4(f));
  }
  for (const at::Tensor& d : results.d_features) {
    d_strides.push_back(strides4(d));
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
          d_grad.mutable_data_ptr<scalar_t>(), strides4(d_grad).data(), results.d_rois.mutable_data_ptr<acc_t>());
      if (features_grad) {
        std::vector<acc_t*> outs;
        for (at::Tensor& d : results.d_features) {
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
  return results.finish(dtype);
}

at::Tensor roi_align_backward_rois_cpu(const at::Tensor& grad, const at::Tensor& input, const at::Tensor& rois,
                                       double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                                       int64_t sampling_ratio, bool aligned) {
  return roi_align_backward_rois_levels_cpu("roi_align_backward_rois", grad, {input}, rois, {spatial_scale},
                                            nullptr, pooled_height, pooled_width, sampling_ratio, aligned);
}

at::Tensor multi_scale_roi_align_backward_rois_cpu(const at::Tensor& grad, at::TensorList features,
                                                   const at::Tensor& rois, at::ArrayRef<double> spatial_scales,
                                                   int64_t pooled_height, int64_t pooled_width,
                                                   int64_t sampling_ratio, bool aligned, double canonical_scale,
                                                   int64_t canonical_level) {
  const char* op = "multi_scale_roi_align_backward_rois";
  check_scale_per_map(op, features.size(), spatial_scales.size());
  const std::vector<double> scales = spatial_scales.vec();
  const std::vector<int64_t> levels = assign_levels_cpu(op, rois, scales, canonical_scale, canonical_level);
  return roi_align_backward_rois_levels_cpu(op, grad, features.vec(), rois, scales, levels.data(), pooled_height,
                                            pooled_width, sampling_ratio, aligned);
}

// Both roi_align (one map; the level arguments are then unused) and the FPN pooler.
std::tuple<at::Tensor, std::vector<at::Tensor>, at::Tensor> roi_align_backward_rois_backward_cpu(
    const at::Tensor& grad, at::TensorList features, const at::Tensor& rois, const at::Tensor& grad_grad_rois,
    at::ArrayRef<double> spatial_scales, int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
    bool aligned, double canonical_scale, int64_t canonical_level, bool features_grad) {
  const char* op = "roi_align_backward_rois_backward";
  check_scale_per_map(op, features.size(), spatial_scales.size());
  const std::vector<double> scales = spatial_scales.vec();
  const std::vector<int64_t> levels = assign_levels_cpu(op, rois, scales, canonical_scale, canonical_level);
  return roi_align_backward_rois_backward_levels_cpu(op, grad, features.vec(), rois, grad_grad_rois, scales,
                                                     levels.data(), pooled_height, pooled_width, sampling_ratio,
                                                     aligned, features_grad);
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CPU, m) {
  m.impl("roi_align_backward_rois", &roi_align_backward_rois_cpu);
  m.impl("multi_scale_roi_align_backward_rois", &multi_scale_roi_align_backward_rois_cpu);
  m.impl("roi_align_backward_rois_backward", &roi_align_backward_rois_backward_cpu);
}

}  // namespace cpu
}  // namespace roiops
