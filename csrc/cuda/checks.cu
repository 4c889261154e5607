// The CUDA RoI checks of cuda/checks.cuh.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>

#include "common/box_geometry.h"
#include "cuda/checks.cuh"

namespace roiops {
namespace {

constexpr int kCheckThreads = 1024;

// first_bad[0] = the lowest k whose batch index rois[k, 0] is not an integer in [0, batch), or
// num_rois. One block (a few thousand RoIs take microseconds); a fixed-order min reduction.
template <typename scalar_t>
__global__ void __launch_bounds__(kCheckThreads)
    first_bad_batch_index_kernel_cuda(const scalar_t* __restrict__ rois, int64_t row_stride, int64_t num_rois,
                                      int64_t batch, int64_t* __restrict__ first_bad) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ int64_t lowest[kCheckThreads];
  int64_t mine = num_rois;
  for (int64_t k = threadIdx.x; k < num_rois && mine == num_rois; k += blockDim.x) {
    const acc_t b = static_cast<acc_t>(rois[k * row_stride]);
    const bool ok = is_batch_index(b, batch);
    mine = ok ? mine : k;
  }
  lowest[threadIdx.x] = mine;
  __syncthreads();
  for (int half = kCheckThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half && lowest[threadIdx.x + half] < lowest[threadIdx.x]) {
      lowest[threadIdx.x] = lowest[threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    *first_bad = lowest[0];
  }
}


}  // namespace

void check_batch_indices_cuda(const char* op, const at::Tensor& rois, int64_t batch_size) {
  const int64_t num_rois = rois.size(0);
  if (num_rois == 0 || c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None) {
    return;
  }
  at::Tensor first_bad = at::empty({1}, rois.options().dtype(at::kLong));
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, rois.scalar_type(), "check_batch_indices_cuda", [&] {
    first_bad_batch_index_kernel_cuda<scalar_t><<<1, kCheckThreads, 0, stream>>>(
        rois.const_data_ptr<scalar_t>(), rois.stride(0), num_rois, batch_size, first_bad.mutable_data_ptr<int64_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  // One device-to-host copy; a second only to quote the bad value in the error.
  const int64_t k = first_bad.item<int64_t>();
  TORCH_CHECK_VALUE(k == num_rois, op, ": rois[", k, ", 0] (the batch index) must be an integer in [0, ", batch_size,
                    "), got ", rois[k][0].item<double>());
}

void check_levels_cuda(const char* op, const at::Tensor& levels, int64_t num_rois, const at::Tensor& like) {
  if (levels.defined()) {
    TORCH_CHECK(levels.scalar_type() == at::kLong && levels.dim() == 1 && levels.size(0) == num_rois &&
                    levels.is_contiguous() && levels.device() == like.device(),
                op, ": levels must be a contiguous int64 [K] tensor on the input's device");
  }
}

}  // namespace roiops
