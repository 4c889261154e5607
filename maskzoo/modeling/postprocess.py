"""From the resized batch back to the input images: rescale boxes and keypoints, paste masks."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

import roiops
from maskzoo.config import ModelConfig
from maskzoo.modeling.transform import resize_boxes, resize_keypoints


def postprocess(
    detections: list[dict], image_sizes, original_sizes, config: ModelConfig | None = None
) -> list[dict]:
    """Maps per-image detections from the resized batch back to each input image.

    Boxes and keypoints are rescaled; M x M mask probabilities Tensor[D, 1, M, M] become
    Tensor[D, 1, H, W] probabilities at input resolution, pasted into their boxes by the config's
    rule (``mask.paste``): :func:`roiops.paste_masks` (one pixel of zero padding around the mask,
    torchvision's model) or :func:`paste_masks_at_pixel_centres` (Detectron2's model). With
    ``box.drop_empty`` (Detectron2), detections whose box has no area in the input image go.
    ``config`` None: torchvision's conventions.
    """
    paste = "torchvision" if config is None or config.mask is None else config.mask.paste
    drop_empty = config is not None and config.box.drop_empty
    out = []
    for det, size, original in zip(detections, image_sizes, original_sizes):
        det = dict(det)
        det["boxes"] = resize_boxes(det["boxes"], size, original)
        if drop_empty:
            boxes = det["boxes"]
            # The boxes were clipped to the resized image; clipping again to the input image and
            # testing there is what Detectron2 does after rescaling.
            h, w = float(original[0]), float(original[1])
            boxes = torch.stack(
                [
                    boxes[:, 0].clamp(0, w),
                    boxes[:, 1].clamp(0, h),
                    boxes[:, 2].clamp(0, w),
                    boxes[:, 3].clamp(0, h),
                ],
                dim=1,
            )
            keep = torch.where((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))[0]
            det = {k: v[keep] for k, v in det.items()}
            det["boxes"] = boxes[keep]
        if "masks" in det:
            image_shape = (int(original[0]), int(original[1]))
            if paste == "detectron2":
                det["masks"] = paste_masks_at_pixel_centres(det["masks"][:, 0], det["boxes"], image_shape)[
                    :, None
                ]
            else:
                det["masks"] = roiops.paste_masks(
                    det["masks"][:, 0], det["boxes"], image_shape, threshold=None
                )[:, None]
        if "keypoints" in det:
            det["keypoints"] = resize_keypoints(det["keypoints"], size, original)
        out.append(det)
    return out


def paste_masks_at_pixel_centres(masks: torch.Tensor, boxes: torch.Tensor, image_shape) -> torch.Tensor:
    """M x M mask probabilities pasted into their exact (fractional) boxes: Tensor[D, H, W].

    masks: Tensor[D, M, M]; boxes: Tensor[D, 4] (x1, y1, x2, y2) in image pixels; image_shape (H, W).
    The mask covers the box exactly, its cells of size (w / M, h / M) sampled at their centres. An
    image pixel (x, y) takes the bilinear interpolation of the mask at its centre (x + 0.5, y + 0.5),
    with zeros beyond the mask's outer cell centres (``grid_sample``, align_corners=False, zero
    padding): Detectron2's pasting model. Pixels more than one pixel outside the box stay 0.
    Float masks and boxes of one dtype; one ``grid_sample`` call per detection over its window.
    """
    height, width = int(image_shape[0]), int(image_shape[1])
    out = masks.new_zeros((masks.shape[0], height, width))
    for i in range(masks.shape[0]):
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        # A one-pixel margin around the box: beyond it the sampled values are all zero.
        col0, row0 = max(int(math.floor(x1)) - 1, 0), max(int(math.floor(y1)) - 1, 0)
        col1, row1 = min(int(math.ceil(x2)) + 1, width), min(int(math.ceil(y2)) + 1, height)
        if col1 <= col0 or row1 <= row0:
            continue
        # Pixel centres as positions in the box, mapped to grid_sample's [-1, 1] over the mask.
        xs = (torch.arange(col0, col1, dtype=torch.float32, device=masks.device) + 0.5 - boxes[i, 0]) / (
            boxes[i, 2] - boxes[i, 0]
        ) * 2 - 1
        ys = (torch.arange(row0, row1, dtype=torch.float32, device=masks.device) + 0.5 - boxes[i, 1]) / (
            boxes[i, 3] - boxes[i, 1]
        ) * 2 - 1
        grid = torch.stack([xs[None, :].expand(ys.shape[0], -1), ys[:, None].expand(-1, xs.shape[0])], dim=2)[
            None
        ]
        sampled = F.grid_sample(masks[i][None, None], grid.to(masks.dtype), align_corners=False)
        out[i, row0:row1, col0:col1] = sampled[0, 0]
    return out
