// Host-side argument checks of the CUDA RoI kernels that need the device (the device-independent
// ones are common/checks.h). Used by roi_align.cu, roi_align_box_grad.cu and roi_pool.cu.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace roiops {

// Raises the CPU kernels' ValueError naming the first RoI whose batch index (rois[k, 0]) is not an
// integer in [0, batch_size). Costs one device-to-host copy, so it is skipped while the stream is
// being captured into a CUDA graph; the kernels then skip such RoIs (they pool to 0) rather than
// read out of bounds.
void check_batch_indices_cuda(const char* op, const at::Tensor& rois, int64_t batch_size);

// levels: undefined (one map), or the [K] int64 level of each RoI, contiguous, on like's device.
void check_levels_cuda(const char* op, const at::Tensor& levels, int64_t num_rois, const at::Tensor& like);

}  // namespace roiops
