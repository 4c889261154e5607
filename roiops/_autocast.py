"""Autocast kernels: what the roiops ops do inside ``torch.autocast`` on the CPU and on CUDA.

Under autocast the convolutions hand out float16 / bfloat16 maps while boxes stay float32, and a
coordinate cannot be rounded to half precision: bfloat16 keeps 8 significant bits (at x = 1216 it
moves in steps of 8 pixels), float16 11 (steps of 1 pixel from 1024 on). So every op that reads
coordinates gets a kernel at the AutocastCPU and AutocastCUDA dispatch keys that casts its floating
inputs *up* to the compute dtype (float32; float64 when an input is float64, which autocast never
narrows), runs the op with autocast off, and returns:

- roi_align, roi_pool, multi_scale_roi_align: the pooled features cast back to the map's dtype, as
  torchvision does, so the head after the pooler keeps running in half precision. Cost: a float32
  copy of the map (for the FPN pooler, of every level) per call, alive during the call, and
  float32 reads in the kernel; the kernels take one dtype for map and boxes, and rounding the
  boxes instead would move them by whole pixels. roi_pool's argmax is unchanged (int64).
- ps_roi_align, ps_roi_pool: as roi_align (the same cost).
- box_iou, box_iou_family: the IoU in the compute dtype (float32), not cast back: IoUs are compared with
  thresholds (0.7 / 0.3 for anchors), where half precision would flip matches.
- nms, batched_nms: the kept indices (int64), the same as for float32 inputs.
- soft_nms: the kept indices and the decayed scores cast back to the scores' dtype.

A call whose inputs are all float32 (or float64) computes exactly what it computes outside autocast.
Outside autocast the pooling ops (roi_align, roi_pool, MultiScaleRoIAlign, ps_roi_align,
ps_roi_pool, roi_align_rotated) accept different floating dtypes too: their Python wrappers cast to
the wider of the two and the output back to the map's dtype (``in_common_float_dtype`` in
roiops/_validation.py), so a bfloat16 / float16 map with float32 boxes gives the same values inside
autocast and outside. The other ops (box_iou and its family, nms, batched_nms, soft_nms, the rotated
IoU and NMS) and the native ops called directly still raise on mismatched dtypes outside autocast.
paste_masks has no autocast kernel: it already accepts masks and boxes of different dtypes and
reads the boxes in their own precision.

Why not ``torch.library.register_autocast``: it exists from torch 2.7 on (roiops supports 2.4),
casts every input to one dtype (float64 stays float64, so float64 boxes with a float16 map would
still mismatch), and cannot cast an output back. ``Library.impl`` at the autocast keys, with the
autocast key excluded while the op runs, is what it does underneath, and works on every supported
torch.

Import after roiops._C (the ops must exist); the order relative to _meta and _autograd does not
matter, each registration fills its own dispatch key.
"""

import torch

__all__ = ["AUTOCAST_DEVICE_TYPES", "autocast_active", "compute_dtype"]

AUTOCAST_DEVICE_TYPES = ("cpu", "cuda")

_KEYS = {"cpu": torch._C.DispatchKey.AutocastCPU, "cuda": torch._C.DispatchKey.AutocastCUDA}
_LIB = torch.library.Library("roiops", "IMPL")
_ops = torch.ops.roiops


def autocast_active(t: torch.Tensor) -> bool:
    """True inside torch.autocast for t's device type, where roiops registers autocast kernels
    (the ops then accept, and cast, maps and boxes of different floating dtypes)."""
    return t.device.type in AUTOCAST_DEVICE_TYPES and torch.is_autocast_enabled(t.device.type)


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float32, or float64 when a floating input is float64: the dtype the ops run in under autocast."""
    dtype = torch.float32
    for t in tensors:
        if t.is_floating_point():
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _up(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # Integer tensors (idxs) pass untouched; .to() of the same dtype returns t itself.
    return t.to(dtype) if t.is_floating_point() else t


def _roi_align(input, rois, *params):
    dtype = compute_dtype(input, rois)
    return _ops.roi_align(_up(input, dtype), _up(rois, dtype), *params).to(input.dtype)


def _roi_pool(input, rois, *params):
    dtype = compute_dtype(input, rois)
    output, argmax = _ops.roi_pool(_up(input, dtype), _up(rois, dtype), *params)
    return output.to(input.dtype), argmax


def _multi_scale_roi_align(features, rois, *params):
    if len(features) == 0:  # the op's own message
        return _ops.multi_scale_roi_align(features, rois, *params)
    dtype = compute_dtype(rois, *features)
    output = _ops.multi_scale_roi_align([_up(f, dtype) for f in features], _up(rois, dtype), *params)
    return output.to(features[0].dtype)


def _ps_roi_align(input, rois, *params):
    dtype = compute_dtype(input, rois)
    return _ops.ps_roi_align(_up(input, dtype), _up(rois, dtype), *params).to(input.dtype)


def _ps_roi_pool(input, rois, *params):
    dtype = compute_dtype(input, rois)
    return _ops.ps_roi_pool(_up(input, dtype), _up(rois, dtype), *params).to(input.dtype)


def _box_iou(boxes1, boxes2):
    dtype = compute_dtype(boxes1, boxes2)
    return _ops.box_iou(_up(boxes1, dtype), _up(boxes2, dtype))


def _box_iou_family(boxes1, boxes2, kind, eps):
    dtype = compute_dtype(boxes1, boxes2)
    return _ops.box_iou_family(_up(boxes1, dtype), _up(boxes2, dtype), kind, eps)


def _nms(boxes, scores, iou_threshold):
    dtype = compute_dtype(boxes, scores)
    return _ops.nms(_up(boxes, dtype), _up(scores, dtype), iou_threshold)


def _batched_nms(boxes, scores, idxs, iou_threshold):
    dtype = compute_dtype(boxes, scores)
    return _ops.batched_nms(_up(boxes, dtype), _up(scores, dtype), idxs, iou_threshold)


def _soft_nms(boxes, scores, *params):
    dtype = compute_dtype(boxes, scores)
    keep, decayed = _ops.soft_nms(_up(boxes, dtype), _up(scores, dtype), *params)
    return keep, decayed.to(scores.dtype)


def _roi_align_rotated(input, rois, *params):
    dtype = compute_dtype(input, rois)
    return _ops.roi_align_rotated(_up(input, dtype), _up(rois, dtype), *params).to(input.dtype)


def _box_iou_rotated(boxes1, boxes2, aligned):
    dtype = compute_dtype(boxes1, boxes2)
    return _ops.box_iou_rotated(_up(boxes1, dtype), _up(boxes2, dtype), aligned)


def _nms_rotated(boxes, scores, iou_threshold):
    dtype = compute_dtype(boxes, scores)
    return _ops.nms_rotated(_up(boxes, dtype), _up(scores, dtype), iou_threshold)


def _batched_nms_rotated(boxes, scores, idxs, iou_threshold):
    dtype = compute_dtype(boxes, scores)
    return _ops.batched_nms_rotated(_up(boxes, dtype), _up(scores, dtype), idxs, iou_threshold)


KERNELS = {
    "roi_align": _roi_align,
    "roi_pool": _roi_pool,
    "multi_scale_roi_align": _multi_scale_roi_align,
    "ps_roi_align": _ps_roi_align,
    "ps_roi_pool": _ps_roi_pool,
    "box_iou": _box_iou,
    "box_iou_family": _box_iou_family,
    "nms": _nms,
    "batched_nms": _batched_nms,
    "soft_nms": _soft_nms,
    # rotated boxes: as roi_align, box_iou, nms and batched_nms
    "roi_align_rotated": _roi_align_rotated,
    "box_iou_rotated": _box_iou_rotated,
    "nms_rotated": _nms_rotated,
    "batched_nms_rotated": _batched_nms_rotated,
}


def _with_autocast_off(kernel, key):
    excluded = torch._C.DispatchKeySet(key)

    def autocast_kernel(*args):
        # The op called inside must reach the CPU / CUDA kernel, not this one again.
        with torch._C._ExcludeDispatchKeyGuard(excluded):
            return kernel(*args)

    return autocast_kernel


for _name, _kernel in KERNELS.items():
    for _key in _KEYS.values():
        _LIB.impl(_name, _with_autocast_off(_kernel, _key), _key.name)
