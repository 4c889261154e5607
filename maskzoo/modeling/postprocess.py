"""From the resized batch back to the input images: rescale boxes and keypoints, paste masks."""

from __future__ import annotations

import roiops
from maskzoo.config import MaskHeadConfig
from maskzoo.modeling.transform import resize_boxes, resize_keypoints


def postprocess(detections: list[dict], image_sizes, original_sizes, mask_config: MaskHeadConfig | None):
    """Maps per-image detections from the resized batch back to each input image.

    Boxes and keypoints are rescaled; M x M mask probabilities become Tensor[K, 1, H, W]
    probabilities at input resolution, pasted into their boxes with :func:`roiops.paste_masks`.
    """
    out = []
    for det, size, original in zip(detections, image_sizes, original_sizes):
        det = dict(det)
        det["boxes"] = resize_boxes(det["boxes"], size, original)
        if "masks" in det:
            padding = 1 if mask_config is None else mask_config.paste_padding
            masks = det["masks"]
            pasted = roiops.paste_masks(
                masks[:, 0], det["boxes"], (int(original[0]), int(original[1])), padding=padding
            )
            det["masks"] = pasted[:, None]
        if "keypoints" in det:
            det["keypoints"] = resize_keypoints(det["keypoints"], size, original)
        out.append(det)
    return out
