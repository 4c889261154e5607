"""roiops: the region-of-interest operators of two-stage detectors, as native PyTorch custom ops.

Import order matters: ``_C`` must load first (it registers the operator schemas and the CPU/CUDA
kernels with the dispatcher), then ``_meta``, ``_autograd`` and ``_autocast`` attach fake kernels,
gradients and autocast (mixed precision) kernels to those operators, then the public wrappers use
them.
"""

import torch as _torch

from roiops import _extension

_extension.load()

from roiops import _autocast, _autograd, _meta  # noqa: E402,F401  (registrations; need _C loaded)
from roiops.boxes import box_area, box_iou  # noqa: E402
from roiops.poolers import MultiScaleRoIAlign  # noqa: E402
from roiops.roi_align import RoIAlign, roi_align  # noqa: E402
from roiops.roi_pool import RoIPool, roi_pool  # noqa: E402

# isort: split
# ---- position-sensitive RoI pooling (R-FCN) ----
from roiops.ps_roi_align import PSRoIAlign, ps_roi_align  # noqa: E402
from roiops.ps_roi_pool import PSRoIPool, ps_roi_pool  # noqa: E402

# isort: split
# ---- suppression, box coding, box ops and masks ----
from roiops.box_coder import BoxCoder  # noqa: E402
from roiops.boxes import box_convert, clip_boxes_to_image, generalized_box_iou, remove_small_boxes  # noqa: E402
from roiops.masks import paste_masks  # noqa: E402
from roiops.nms import batched_nms, nms, soft_nms  # noqa: E402

# isort: split
# ---- the rest of torchvision's box functions: the pairwise IoU family, its losses, masks_to_boxes ----
from roiops.boxes import (  # noqa: E402
    complete_box_iou,
    complete_box_iou_loss,
    distance_box_iou,
    distance_box_iou_loss,
    generalized_box_iou_loss,
    masks_to_boxes,
)

# ---- detection post-processing ----
from roiops.postprocess import detections_from_box_head, rpn_proposals  # noqa: E402

# ---- rotated boxes ----
from roiops.roi_align_rotated import RoIAlignRotated, roi_align_rotated  # noqa: E402
from roiops.rotated import batched_nms_rotated, box_iou_rotated, nms_rotated  # noqa: E402
from roiops.rotated_box_coder import RotatedBoxCoder  # noqa: E402

# ---- inference convolution ----
from roiops.winograd import WinogradConv3x3, winograd_conv3x3, winograd_weight  # noqa: E402

__all__ = [
    "box_area",
    "box_iou",
    "roi_align",
    "RoIAlign",
    "roi_pool",
    "RoIPool",
    "MultiScaleRoIAlign",
    # position-sensitive RoI pooling (R-FCN)
    "ps_roi_align",
    "PSRoIAlign",
    "ps_roi_pool",
    "PSRoIPool",
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
    # the IoU family, its losses, masks_to_boxes
    "distance_box_iou",
    "complete_box_iou",
    "generalized_box_iou_loss",
    "distance_box_iou_loss",
    "complete_box_iou_loss",
    "masks_to_boxes",
    # detection post-processing
    "rpn_proposals",
    "detections_from_box_head",
    # rotated boxes
    "box_iou_rotated",
    "nms_rotated",
    "batched_nms_rotated",
    "roi_align_rotated",
    "RoIAlignRotated",
    "RotatedBoxCoder",
    # inference convolution
    "winograd_conv3x3",
    "winograd_weight",
    "WinogradConv3x3",
]

# The functions are FX leaves (torch.fx.wrap) in their own modules; torch.fx patches a wrapped name in
# one module's globals only, so they are registered here too, for code that calls roiops.roi_align(...).
for _name in (
    "roi_align",
    "roi_pool",
    "ps_roi_align",
    "ps_roi_pool",
    "nms",
    "batched_nms",
    "soft_nms",
    "box_area",
    "box_iou",
    "generalized_box_iou",
    "distance_box_iou",
    "complete_box_iou",
    "box_convert",
    "clip_boxes_to_image",
    "remove_small_boxes",
    "generalized_box_iou_loss",
    "distance_box_iou_loss",
    "complete_box_iou_loss",
    "masks_to_boxes",
    "box_iou_rotated",
    "nms_rotated",
    "batched_nms_rotated",
    "roi_align_rotated",
):
    _torch.fx.wrap(_name)
del _name

__version__ = "0.1.0"
