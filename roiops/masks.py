"""Pasting Mask R-CNN's low-resolution mask predictions into full-size image masks."""

import math

import torch

from roiops._validation import check_float, check_tensor


def paste_masks(masks: torch.Tensor, boxes: torch.Tensor, image_shape: tuple[int, int],
                threshold: float | None = 0.5) -> torch.Tensor:
    """Pastes each mask into its box of an image-sized canvas, as Mask R-CNN inference does.

    Pixel model (torchvision's paste_masks_in_image, reproduced exactly; float32 results agree
    bit for bit):

    1. The M_h x M_w mask is padded with one pixel of zeros on every side (S = M + 2 samples per
       axis) and its box is grown about its centre by S / M per axis, so that the mask's border
       fades out just outside the box.
    2. The grown box's corners are truncated toward zero to integer pixels x0, y0, x1, y1; the
       patch covers pixels x0..x1 and y0..y1 inclusive (w = x1 - x0 + 1 columns, at least 1).
       Image pixel (x, y) is the unit square whose top-left corner is (x, y).
    3. The padded mask is resized to h x w with bilinear interpolation, align_corners=False:
       patch column i samples the padded mask at (i + 0.5) * S / w - 0.5 (clamped below at 0),
       i.e. pixel centres are matched, not corners.
    4. The patch is written where it overlaps the image; every other pixel is 0. A box entirely
       outside the image gives an all-zero mask (torchvision raises), and so does a box with a
       NaN or infinite coordinate.

    Only the pixels of each box's extent are computed; no N x H x W float intermediate is
    allocated when a threshold is given (the result itself is bool), and masks run in parallel.

    Args:
        masks: Tensor[N, M_h, M_w] (or torchvision's Tensor[N, 1, M_h, M_w]) mask probabilities,
            float dtype.
        boxes: Tensor[N, 4] (x1, y1, x2, y2) in image pixels, float dtype, same device.
        image_shape: (height, width) of the image, non-negative ints.
        threshold: a pixel is True where its interpolated probability is strictly greater than
            threshold (compared in the masks' dtype); None returns the probabilities instead.

    Returns:
        Tensor[N, height, width]: bool with a threshold, else masks' dtype.

    Raises:
        TypeError / ValueError naming the argument for a non-tensor, a wrong shape or dtype, a
        device mismatch, a bad image_shape or a NaN threshold.
    """
    check_tensor("masks", masks)
    if masks.dim() == 4 and masks.size(1) == 1:
        masks = masks[:, 0]
    if masks.dim() != 3:
        raise ValueError(f"masks must be Tensor[N, M, M] (or [N, 1, M, M]), got shape {tuple(masks.shape)}")
    check_float("masks", masks)
    check_tensor("boxes", boxes, ndim=2, last_dim=4)
    check_float("boxes", boxes)
    if boxes.size(0) != masks.size(0):
        raise ValueError(f"boxes must have one row per mask: masks {tuple(masks.shape)}, "
                         f"boxes {tuple(boxes.shape)}")
    if boxes.device != masks.device:
        raise ValueError(f"masks and boxes must be on the same device, got {masks.device} and {boxes.device}")
    if masks.size(0) > 0 and (masks.size(1) == 0 or masks.size(2) == 0):
        raise ValueError(f"masks must not be empty, got shape {tuple(masks.shape)}")
    if not isinstance(image_shape, (tuple, list, torch.Size)) or len(image_shape) != 2:
        raise ValueError(f"image_shape must be (height, width), got {image_shape!r}")
    height, width = image_shape
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, torch.SymInt)):
            raise TypeError(f"image_shape {name} must be an int, got {type(value).__name__}")
        if isinstance(value, int) and value < 0:
            raise ValueError(f"image_shape {name} must be >= 0, got {value}")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise TypeError(f"threshold must be a number or None, got {type(threshold).__name__}")
        if math.isnan(threshold):
            raise ValueError("threshold must not be NaN")
        threshold = float(threshold)
    return torch.ops.roiops.paste_masks(masks, boxes, height, width, threshold)
