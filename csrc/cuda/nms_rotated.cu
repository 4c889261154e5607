// Non-maximum suppression of rotated boxes on CUDA: nms_rotated and batched_nms_rotated. Semantics
// are the CPU kernels' (cpu/nms_rotated.cpp): rank by decreasing score, NaN scores after every
// number, ties to the lower index; suppress when IoU > iou_threshold (common/rotated_box_geometry.h,
// in the op-math type), an empty or non-finite box is kept and suppresses nothing.
//
// 1. Rank on the device: a stable descending sort of the scores, then a stable sort that moves
//    the NaN scores (which torch.sort ranks first) behind the numbers.
// 2. Mask kernel: ranked boxes in blocks of 64; block (row, col) with col >= row writes, for each
//    row box i, a 64-bit word whose bit k says "i suppresses column box k" (IoU > threshold and,
//    for batched_nms_rotated, the same category). Boxes are prepared once per block in shared
//    memory.
// 3. The greedy pass walks the mask on the host, in rank order (one copy of N * N / 64 words).

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/isnan.h>
#include <ATen/ops/sort.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <tuple>
#include <vector>

#include "common/rotated_box_geometry.h"
#include "common/rotated_checks.h"

namespace roiops {
namespace {

constexpr int kBlockBoxes = 64;

// sorted: [N, 5] in rank order; categories: [N] in rank order or nullptr; mask: [N, col_blocks].
template <typename scalar_t>
__global__ void nms_rotated_mask_kernel_cuda(const scalar_t* __restrict__ sorted,
                                             const int64_t* __restrict__ categories, int64_t n, int64_t col_blocks,
                                             double iou_threshold, unsigned long long* __restrict__ mask) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t row_block = blockIdx.y, col_block = blockIdx.x;
  if (col_block < row_block) {
    return;
  }
  const int64_t row_start = row_block * kBlockBoxes, col_start = col_block * kBlockBoxes;
  const int row_size = static_cast<int>(n - row_start < kBlockBoxes ? n - row_start : kBlockBoxes);
  const int col_size = static_cast<int>(n - col_start < kBlockBoxes ? n - col_start : kBlockBoxes);
  __shared__ RotatedBox<acc_t> cols[kBlockBoxes];
  if (threadIdx.x < col_size) {
    cols[threadIdx.x] = load_rotated_box<acc_t>(sorted, col_start + threadIdx.x);
  }
  __syncthreads();
  if (threadIdx.x >= row_size) {
    return;
  }
  const int64_t i = row_start + threadIdx.x;
  const RotatedBox<acc_t> box = load_rotated_box<acc_t>(sorted, i);
  const acc_t threshold = static_cast<acc_t>(iou_threshold);
  unsigned long long bits = 0;
  const int first = row_block == col_block ? static_cast<int>(threadIdx.x) + 1 : 0;
  for (int k = first; k < col_size; ++k) {
    if (categories != nullptr && categories[i] != categories[col_start + k]) {
      continue;
    }
    if (rotated_box_iou(box, cols[k]) > threshold) {
      bits |= 1ULL << k;
    }
  }
  mask[i * col_blocks + col_block] = bits;
}

// The rank order: decreasing score, NaN last, ties by lower index.
at::Tensor rank_order_cuda(const at::Tensor& scores) {
  const at::Tensor order = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  const at::Tensor nan_last = std::get<1>(at::isnan(scores.index_select(0, order)).to(at::kByte).sort(true, 0, false));
  return order.index_select(0, nan_last);
}

at::Tensor nms_rotated_impl_cuda(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                                 double iou_threshold) {
  const c10::cuda::CUDAGuard guard(boxes.device());
  const int64_t n = boxes.size(0);
  if (n == 0) {
    return at::empty({0}, boxes.options().dtype(at::kLong));
  }
  const at::Tensor order = rank_order_cuda(scores);
  const at::Tensor sorted = boxes.index_select(0, order).contiguous();
  const at::Tensor categories = idxs.defined() ? idxs.index_select(0, order).contiguous() : at::Tensor();
  const int64_t col_blocks = (n + kBlockBoxes - 1) / kBlockBoxes;
  at::Tensor mask = at::empty({n * col_blocks}, boxes.options().dtype(at::kLong));
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  TORCH_CHECK(col_blocks <= 65535, "nms_rotated: at most ", 65535 * kBlockBoxes, " boxes on CUDA");
  const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(col_blocks));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes.scalar_type(), "nms_rotated_cuda", [&] {
    nms_rotated_mask_kernel_cuda<scalar_t><<<grid, kBlockBoxes, 0, stream>>>(
        sorted.const_data_ptr<scalar_t>(), categories.defined() ? categories.const_data_ptr<int64_t>() : nullptr, n,
        col_blocks, iou_threshold, reinterpret_cast<unsigned long long*>(mask.mutable_data_ptr<int64_t>()));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const at::Tensor mask_host = mask.cpu();
  const auto* words = reinterpret_cast<const unsigned long long*>(mask_host.const_data_ptr<int64_t>());
  std::vector<unsigned long long> removed(col_blocks, 0);
  std::vector<int64_t> kept;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t block = i / kBlockBoxes;
    if (removed[block] & (1ULL << (i % kBlockBoxes))) {
      continue;
    }
    kept.push_back(i);
    const unsigned long long* row = words + i * col_blocks;
    for (int64_t b = block; b < col_blocks; ++b) {
      removed[b] |= row[b];
    }
  }
  const at::Tensor kept_ranks =
      at::from_blob(kept.data(), {static_cast<int64_t>(kept.size())}, at::TensorOptions().dtype(at::kLong))
          .to(boxes.device());
  return order.index_select(0, kept_ranks);
}

at::Tensor nms_rotated_cuda(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  check_nms_rotated_args("nms_rotated", boxes, scores, at::Tensor());
  return nms_rotated_impl_cuda(boxes, scores, at::Tensor(), iou_threshold);
}

at::Tensor batched_nms_rotated_cuda(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                                    double iou_threshold) {
  check_nms_rotated_args("batched_nms_rotated", boxes, scores, idxs);
  return nms_rotated_impl_cuda(boxes, scores, idxs, iou_threshold);
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CUDA, m) {
  m.impl("nms_rotated", &nms_rotated_cuda);
  m.impl("batched_nms_rotated", &batched_nms_rotated_cuda);
}

}  // namespace roiops
