"""From the resized batch back to the input images: rescale boxes and keypoints, paste masks."""

from __future__ import annotations

import roiops
from maskzoo.modeling.transform import resize_boxes, resize_keypoints


def postprocess(detections: list[dict], image_sizes, original_sizes) -> list[dict]:
    """Maps per-image detections from the resized batch back to each input image.

    Boxes and keypoints are rescaled; M x M mask probabilities Tensor[D, 1, M, M] become
    Tensor[D, 1, H, W] probabilities at input resolution, pasted into their boxes by
    :func:`roiops.paste_masks` (one pixel of zero padding around the mask, torchvision's model).
    """
    out = []
    for det, size, original in zip(detections, image_sizes, original_sizes):
        det = dict(det)
        det["boxes"] = resize_boxes(det["boxes"], size, original)
        if "masks" in det:
            image_shape = (int(original[0]), int(original[1]))
            det["masks"] = roiops.paste_masks(det["masks"][:, 0], det["boxes"], image_shape, threshold=None)[
                :, None
            ]
        if "keypoints" in det:
            det["keypoints"] = resize_keypoints(det["keypoints"], size, original)
        out.append(det)
    return out
