"""roiops: the region-of-interest operators of two-stage detectors, as native PyTorch custom ops.

Import order matters: ``_C`` must load first (it registers the operator schemas and the CPU/CUDA
kernels with the dispatcher), then ``_meta``, ``_autograd`` and ``_autocast`` attach fake kernels,
gradients and autocast (mixed precision) kernels to those operators, then the public wrappers use
them.
"""

from roiops import _extension

_extension.load()

from roiops import _autocast, _autograd, _meta  # noqa: E402,F401  (registrations; need _C loaded)
from roiops.boxes import box_area, box_iou  # noqa: E402
from roiops.poolers import MultiScaleRoIAlign  # noqa: E402
from roiops.roi_align import RoIAlign, roi_align  # noqa: E402
from roiops.roi_pool import RoIPool, roi_pool  # noqa: E402

# isort: split
# ---- suppression, box coding, box ops and masks ----
from roiops.box_coder import BoxCoder  # noqa: E402
from roiops.boxes import box_convert, clip_boxes_to_image, generalized_box_iou, remove_small_boxes  # noqa: E402
from roiops.masks import paste_masks  # noqa: E402
from roiops.nms import batched_nms, nms, soft_nms  # noqa: E402

# isort: split
# ---- rotated boxes ----
from roiops.roi_align_rotated import RoIAlignRotated, roi_align_rotated  # noqa: E402
from roiops.rotated import batched_nms_rotated, box_iou_rotated, nms_rotated  # noqa: E402
from roiops.rotated_box_coder import RotatedBoxCoder  # noqa: E402

__all__ = [
    "box_area",
    "box_iou",
    "roi_align",
    "RoIAlign",
    "roi_pool",
    "RoIPool",
    "MultiScaleRoIAlign",
    # suppression, box coding, box ops and masks
    "BoxCoder",
    "box_convert",
    "clip_boxes_to_image",
    "generalized_box_iou",
    "remove_small_boxes",
    "nms",
    "batched_nms",
    "soft_nms",
    "paste_masks",
    # rotated boxes
    "box_iou_rotated",
    "nms_rotated",
    "batched_nms_rotated",
    "roi_align_rotated",
    "RoIAlignRotated",
    "RotatedBoxCoder",
]

__version__ = "0.1.0"
