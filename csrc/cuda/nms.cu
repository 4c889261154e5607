// Non-maximum suppression on CUDA: nms and batched_nms by the block-bitmask algorithm, and
// soft_nms. Semantics are the CPU kernels' (cpu/nms.cpp): rank by decreasing score, NaN scores
// after every number, ties to the lower index; suppress when IoU > iou_threshold, IoU from
// common/box_geometry.h (0 for an empty or NaN box, so such a box suppresses nothing and is kept).
//
// nms / batched_nms:
// 1. Rank: a stable descending sort of the scores, then a stable sort that moves the NaN scores
//    (which torch.sort ranks first) behind the numbers, keeping both groups' order.
// 2. Mask kernel: the ranked boxes are cut into blocks of 64. Block (row, col) of the grid compares
//    the 64 boxes of row block `row` with the 64 of column block `col` and writes, for each row box
//    i, one 64-bit word whose bit k says "i suppresses column box k" (IoU > threshold; for
//    batched_nms also "same category", so categories never interact: no coordinate-offset trick,
//    which loses precision on large coordinates and breaks on NaN/inf). Only col >= row is
//    computed: a box can only suppress boxes ranked after it.
// 3. Greedy kernel: one thread block walks the 64-box blocks in order. Within a block the decision
//    is serial (thread 0, from the diagonal words staged in shared memory); the kept boxes' rows
//    are then OR-ed into the removed-bitmask of all later blocks by every thread in parallel.
// 4. The kept flags become indices with one nonzero(), the only host synchronisation (it sizes
//    the output).

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/nonzero.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/isnan.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <tuple>

#include "common/box_geometry.h"
#include "cuda/postprocess.cuh"

namespace roiops {
namespace {

constexpr int kBoxesPerWord = 64;
constexpr int kGreedyThreads = 256;
// The removed-bitmask lives in shared memory while it fits in the default 48 KiB (up to 393216
// boxes); beyond that it lives in global memory.
constexpr int64_t kMaxSharedWords = 48 * 1024 / sizeof(unsigned long long);

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// sorted_boxes: [N, 4] in score order; categories: [N] in score order, or nullptr for plain nms.
// mask: [N, col_blocks] words.
template <typename scalar_t>
__global__ void nms_mask_kernel_cuda(const scalar_t* __restrict__ sorted_boxes,
                                     const int64_t* __restrict__ categories, int64_t n,
                                     int64_t col_blocks, double iou_threshold,
                                     unsigned long long* __restrict__ mask) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t row_block = blockIdx.y;
  const int64_t col_block = blockIdx.x;
  if (col_block < row_block) {
    return;  // never read by the greedy pass
  }
  const int row_size = static_cast<int>(std::min<int64_t>(n - row_block * kBoxesPerWord, kBoxesPerWord));
  const int col_size = static_cast<int>(std::min<int64_t>(n - col_block * kBoxesPerWord, kBoxesPerWord));

  __shared__ acc_t col_box[kBoxesPerWord][5];  // x1, y1, x2, y2, area
  __shared__ int64_t col_category[kBoxesPerWord];
  if (threadIdx.x < col_size) {
    const int64_t j = col_block * kBoxesPerWord + threadIdx.x;
    const acc_t x1 = sorted_boxes[4 * j], y1 = sorted_boxes[4 * j + 1];
    const acc_t x2 = sorted_boxes[4 * j + 2], y2 = sorted_boxes[4 * j + 3];
    col_box[threadIdx.x][0] = x1;
    col_box[threadIdx.x][1] = y1;
    col_box[threadIdx.x][2] = x2;
    col_box[threadIdx.x][3] = y2;
    col_box[threadIdx.x][4] = box_area(x1, y1, x2, y2);
    col_category[threadIdx.x] = categories != nullptr ? categories[j] : 0;
  }
  __syncthreads();

  if (threadIdx.x < row_size) {
    const int64_t i = row_block * kBoxesPerWord + threadIdx.x;
    const acc_t x1 = sorted_boxes[4 * i], y1 = sorted_boxes[4 * i + 1];
    const acc_t x2 = sorted_boxes[4 * i + 2], y2 = sorted_boxes[4 * i + 3];
    const acc_t area = box_area(x1, y1, x2, y2);
    const int64_t category = categories != nullptr ? categories[i] : 0;
    const acc_t threshold = static_cast<acc_t>(iou_threshold);
    unsigned long long bits = 0;
    const int start = row_block == col_block ? threadIdx.x + 1 : 0;
    for (int k = start; k < col_size; ++k) {
      const acc_t iou = box_iou_with_areas(x1, y1, x2, y2, area, col_box[k][0], col_box[k][1],
                                           col_box[k][2], col_box[k][3], col_box[k][4]);
      // A box with NaN coordinates has IoU 0 (box_iou_with_areas) and so suppresses nothing; a
      // negative threshold suppresses unconditionally (even a NaN IoU between infinite boxes).
      if (col_category[k] == category && (threshold < acc_t(0) || iou > threshold)) {
        bits |= 1ULL << k;
      }
    }
    mask[i * col_blocks + col_block] = bits;
  }
}

// One thread block. keep: [N] flags in score order. removed_global: [col_blocks] zeroed words,
// used only when the bitmask does not fit in shared memory.
template <bool kSharedRemoved>
__global__ void nms_greedy_kernel_cuda(const unsigned long long* __restrict__ mask, int64_t n,
                                       int64_t col_blocks, unsigned long long* removed_global,
                                       bool* __restrict__ keep) {
  extern __shared__ unsigned long long removed_shared[];
  __shared__ unsigned long long diagonal[kBoxesPerWord];
  __shared__ unsigned long long kept_word;
  unsigned long long* removed = kSharedRemoved ? removed_shared : removed_global;
  if (kSharedRemoved) {
    for (int64_t j = threadIdx.x; j < col_blocks; j += blockDim.x) {
      removed[j] = 0;
    }
  }
  __syncthreads();

  for (int64_t block = 0; block < col_blocks; ++block) {
    const int size = static_cast<int>(std::min<int64_t>(n - block * kBoxesPerWord, kBoxesPerWord));
    if (threadIdx.x < size) {
      diagonal[threadIdx.x] = mask[(block * kBoxesPerWord + threadIdx.x) * col_blocks + block];
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      // Serial within the block: box b is kept unless an earlier kept box removed it.
      unsigned long long removed_here = removed[block];
      unsigned long long kept = 0;
      for (int b = 0; b < size; ++b) {
        if (!((removed_here >> b) & 1ULL)) {
          kept |= 1ULL << b;
          removed_here |= diagonal[b];
        }
      }
      kept_word = kept;
    }
    __syncthreads();
    const unsigned long long kept = kept_word;
    if (threadIdx.x < size) {
      keep[block * kBoxesPerWord + threadIdx.x] = (kept >> threadIdx.x) & 1ULL;
    }
    for (int64_t j = block + 1 + threadIdx.x; j < col_blocks; j += blockDim.x) {
      unsigned long long acc = removed[j];
      unsigned long long pending = kept;
      while (pending != 0) {
        const int b = __ffsll(static_cast<long long>(pending)) - 1;
        pending &= pending - 1;
        acc |= mask[(block * kBoxesPerWord + b) * col_blocks + j];
      }
      removed[j] = acc;
    }
    // The next iteration reads removed[block + 1] and overwrites diagonal/kept_word.
    __syncthreads();
  }
}

// Shared by nms and batched_nms: categories is undefined for plain nms.
at::Tensor nms_impl_cuda(const char* op, const at::Tensor& boxes, const at::Tensor& scores,
                         const at::Tensor& categories, double iou_threshold) {
  TORCH_CHECK(boxes.is_cuda() && scores.is_cuda(), op, ": boxes and scores must be CUDA tensors");
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 4, op, ": boxes must be [N, 4]");
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == boxes.size(0), op, ": scores must be [N], N = boxes.size(0)");
  TORCH_CHECK(boxes.device() == scores.device(), op, ": boxes and scores are on different devices");
  TORCH_CHECK(boxes.scalar_type() == scores.scalar_type(), op, ": boxes and scores dtypes differ");
  TORCH_CHECK(at::isFloatingType(boxes.scalar_type()), op, ": boxes must be a floating dtype");
  if (categories.defined()) {
    TORCH_CHECK(categories.dim() == 1 && categories.size(0) == boxes.size(0), op, ": idxs must be [N]");
    TORCH_CHECK(categories.device() == boxes.device(), op, ": idxs is on a different device from boxes");
    TORCH_CHECK(categories.scalar_type() == at::kLong, op, ": idxs must be int64");
  }
  const c10::cuda::CUDAGuard guard(boxes.device());
  const int64_t n = boxes.size(0);
  if (n == 0) {
    return at::empty({0}, boxes.options().dtype(at::kLong));
  }
  const int64_t col_blocks = ceil_div(n, kBoxesPerWord);
  TORCH_CHECK(col_blocks <= std::numeric_limits<uint16_t>::max(), op, ": too many boxes (", n,
              "); at most ", std::numeric_limits<uint16_t>::max() * int64_t{kBoxesPerWord});

  // Stable descending sort: equal scores keep increasing original index. torch.sort ranks NaN
  // above every number; a second stable sort moves the NaNs behind the numbers.
  const auto [sorted_scores, by_score] = at::sort(scores, /*stable=*/true, /*dim=*/0, /*descending=*/true);
  const at::Tensor nan_last =
      std::get<1>(at::sort(sorted_scores.isnan().to(at::kByte), /*stable=*/true, /*dim=*/0, /*descending=*/false));
  const at::Tensor order = by_score.index_select(0, nan_last);
  // A negative (or NaN) threshold: every IoU (>= 0) exceeds it, so the top box suppresses all.
  const double threshold = iou_threshold >= 0.0 ? iou_threshold : -1.0;
  const at::Tensor sorted_boxes = boxes.index_select(0, order).contiguous();
  at::Tensor sorted_categories;
  if (categories.defined()) {
    sorted_categories = categories.index_select(0, order).contiguous();
  }

  at::Tensor mask = at::empty({n, col_blocks}, boxes.options().dtype(at::kLong));
  at::Tensor keep = at::empty({n}, boxes.options().dtype(at::kBool));
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  auto* mask_words = reinterpret_cast<unsigned long long*>(mask.mutable_data_ptr<int64_t>());

  const dim3 mask_grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(col_blocks));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, sorted_boxes.scalar_type(), "nms_mask_cuda", [&] {
    nms_mask_kernel_cuda<scalar_t><<<mask_grid, kBoxesPerWord, 0, stream>>>(
        sorted_boxes.const_data_ptr<scalar_t>(),
        categories.defined() ? sorted_categories.const_data_ptr<int64_t>() : nullptr, n, col_blocks,
        threshold, mask_words);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  if (col_blocks <= kMaxSharedWords) {
    const size_t shared_bytes = col_blocks * sizeof(unsigned long long);
    nms_greedy_kernel_cuda<true><<<1, kGreedyThreads, shared_bytes, stream>>>(
        mask_words, n, col_blocks, nullptr, keep.mutable_data_ptr<bool>());
  } else {
    at::Tensor removed = at::zeros({col_blocks}, boxes.options().dtype(at::kLong));
    nms_greedy_kernel_cuda<false><<<1, kGreedyThreads, 0, stream>>>(
        mask_words, n, col_blocks, reinterpret_cast<unsigned long long*>(removed.mutable_data_ptr<int64_t>()),
        keep.mutable_data_ptr<bool>());
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  // The one host synchronisation: nonzero must know how many boxes were kept.
  const at::Tensor kept_positions = at::nonzero(keep).squeeze(1);
  return order.index_select(0, kept_positions);
}

at::Tensor nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  return nms_impl_cuda("nms", boxes, scores, at::Tensor(), iou_threshold);
}

}  // namespace

// Also called directly by the detection post-processing drivers (cuda/postprocess.cuh).
at::Tensor batched_nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                            double iou_threshold) {
  TORCH_CHECK(idxs.defined(), "batched_nms: idxs is undefined");
  return nms_impl_cuda("batched_nms", boxes, scores, idxs, iou_threshold);
}

namespace {


// ---- soft_nms -----------------------------------------------------------------------------------
//
// Soft-NMS (Bodla et al. 2017), as the CPU: repeatedly take the live box with the highest score
// (ties: lower index) and decay the other live scores by their overlap with it; a box whose score
// falls below score_threshold (or is NaN) leaves. One thread block does it all: per step a block
// argmax, then every thread decays its share of the live boxes. The number kept is read back once.

constexpr int kSoftThreads = 1024;

template <typename acc_t>
__device__ inline void better_of(acc_t& score, int64_t& index, acc_t other_score, int64_t other_index) {
  if (other_index < 0) {
    return;
  }
  if (index < 0 || other_score > score || (other_score == score && other_index < index)) {
    score = other_score;
    index = other_index;
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kSoftThreads)
    soft_nms_kernel_cuda(const scalar_t* __restrict__ boxes, const scalar_t* __restrict__ scores, int64_t n,
                         double iou_threshold, double sigma, double score_threshold, int64_t method,
                         at::opmath_type<scalar_t>* __restrict__ live_score, bool* __restrict__ alive,
                         int64_t* __restrict__ out_index, at::opmath_type<scalar_t>* __restrict__ out_score,
                         int64_t* __restrict__ out_count) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t warp_score[kSoftThreads / 32];
  __shared__ int64_t warp_index[kSoftThreads / 32];
  __shared__ int64_t chosen;
  const acc_t thr = static_cast<acc_t>(iou_threshold);
  const acc_t min_score = static_cast<acc_t>(score_threshold);
  const acc_t inv_sigma = acc_t(1) / static_cast<acc_t>(sigma);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;

  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const acc_t score = static_cast<acc_t>(scores[i]);
    live_score[i] = score;
    alive[i] = score >= min_score;  // false for NaN: a NaN score is dropped
  }
  __syncthreads();

  int64_t count = 0;
  while (true) {
    // Block argmax over the live boxes: highest score, then lowest index.
    acc_t best = 0;
    int64_t best_index = -1;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      if (alive[i]) {
        better_of(best, best_index, live_score[i], i);
      }
    }
    for (int offset = 16; offset > 0; offset /= 2) {
      const acc_t other = __shfl_down_sync(0xffffffffu, best, offset);
      const int64_t other_index = __shfl_down_sync(0xffffffffu, best_index, offset);
      better_of(best, best_index, other, other_index);
    }
    if (lane == 0) {
      warp_score[warp] = best;
      warp_index[warp] = best_index;
    }
    __syncthreads();
    if (warp == 0) {
      best = lane < warps ? warp_score[lane] : acc_t(0);
      best_index = lane < warps ? warp_index[lane] : -1;
      for (int offset = 16; offset > 0; offset /= 2) {
        const acc_t other = __shfl_down_sync(0xffffffffu, best, offset);
        const int64_t other_index = __shfl_down_sync(0xffffffffu, best_index, offset);
        better_of(best, best_index, other, other_index);
      }
      if (lane == 0) {
        chosen = best_index;
        if (best_index >= 0) {
          out_index[count] = best_index;
          out_score[count] = best;
          alive[best_index] = false;
        }
      }
    }
    __syncthreads();
    const int64_t top = chosen;
    if (top < 0) {
      break;
    }
    ++count;
    const acc_t tx1 = boxes[4 * top], ty1 = boxes[4 * top + 1], tx2 = boxes[4 * top + 2], ty2 = boxes[4 * top + 3];
    const acc_t top_area = box_area(tx1, ty1, tx2, ty2);
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      if (!alive[j]) {
        continue;
      }
      const acc_t x1 = boxes[4 * j], y1 = boxes[4 * j + 1], x2 = boxes[4 * j + 2], y2 = boxes[4 * j + 3];
      const acc_t iou = box_iou_with_areas(tx1, ty1, tx2, ty2, top_area, x1, y1, x2, y2, box_area(x1, y1, x2, y2));
      const acc_t decay = method == 0 ? (iou > thr ? acc_t(1) - iou : acc_t(1)) : ::exp(-(iou * iou) * inv_sigma);
      const acc_t score = live_score[j] * decay;
      live_score[j] = score;
      alive[j] = score >= min_score;
    }
    __syncthreads();  // the next argmax reads the decayed scores
  }
  if (threadIdx.x == 0) {
    *out_count = count;
  }
}

std::tuple<at::Tensor, at::Tensor> soft_nms_cuda(const at::Tensor& boxes_in, const at::Tensor& scores_in,
                                                 double iou_threshold, double sigma, double score_threshold,
                                                 int64_t method) {
  const char* op = "soft_nms";
  TORCH_CHECK(boxes_in.is_cuda() && scores_in.device() == boxes_in.device(), op,
              ": boxes and scores must be on the same CUDA device");
  TORCH_CHECK(boxes_in.dim() == 2 && boxes_in.size(1) == 4, op, ": boxes must be [N, 4], got ", boxes_in.sizes());
  TORCH_CHECK(scores_in.dim() == 1 && scores_in.size(0) == boxes_in.size(0), op,
              ": scores must be [N] for boxes [N, 4], got ", scores_in.sizes());
  TORCH_CHECK(boxes_in.scalar_type() == scores_in.scalar_type(), op, ": boxes and scores dtypes differ");
  TORCH_CHECK(at::isFloatingType(boxes_in.scalar_type()), op, ": boxes must be a floating dtype");
  TORCH_CHECK(method == 0 || method == 1, op, ": method must be 0 (linear) or 1 (gaussian), got ", method);
  const c10::cuda::CUDAGuard guard(boxes_in.device());
  const at::Tensor boxes = boxes_in.contiguous();
  const at::Tensor scores = scores_in.contiguous();
  const int64_t n = boxes.size(0);
  if (n == 0) {
    return {at::empty({0}, boxes.options().dtype(at::kLong)), at::empty({0}, scores.options())};
  }
  const auto acc_dtype = at::toOpMathType(scores.scalar_type());
  at::Tensor live_score = at::empty({n}, scores.options().dtype(acc_dtype));
  at::Tensor alive = at::empty({n}, scores.options().dtype(at::kBool));
  at::Tensor out_index = at::empty({n}, boxes.options().dtype(at::kLong));
  at::Tensor out_score = at::empty({n}, scores.options().dtype(acc_dtype));
  at::Tensor out_count = at::empty({1}, boxes.options().dtype(at::kLong));
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes.scalar_type(), "soft_nms_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    soft_nms_kernel_cuda<scalar_t><<<1, kSoftThreads, 0, stream>>>(
        boxes.const_data_ptr<scalar_t>(), scores.const_data_ptr<scalar_t>(), n, iou_threshold, sigma,
        score_threshold, method, live_score.mutable_data_ptr<acc_t>(), alive.mutable_data_ptr<bool>(),
        out_index.mutable_data_ptr<int64_t>(), out_score.mutable_data_ptr<acc_t>(),
        out_count.mutable_data_ptr<int64_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  // The one host synchronisation: the number of boxes kept sizes the outputs.
  const int64_t kept = out_count.item<int64_t>();
  return {out_index.narrow(0, 0, kept), out_score.narrow(0, 0, kept).to(scores.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CUDA, m) {
  m.impl("nms", &nms_cuda);
  m.impl("batched_nms", &batched_nms_cuda);
  m.impl("soft_nms", &soft_nms_cuda);
}

}  // namespace roiops
