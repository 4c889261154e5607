"""Predictions drawn over their image: masks, boxes, class names with scores, keypoints.

Pillow only. ``draw_predictions`` takes the image as ``Tensor[3, H, W]`` (float in [0, 1] or uint8)
or a PIL image, and one eval-mode prediction dict of a maskzoo model: ``boxes`` ``Tensor[N, 4]``
(x1, y1, x2, y2 in the image's pixels), ``labels`` ``Tensor[N]``, ``scores`` ``Tensor[N]``,
optionally ``masks`` ``Tensor[N, 1, H, W]`` (probabilities) and ``keypoints`` ``Tensor[N, K, 3]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

__all__ = ["draw_predictions", "PALETTE"]

# Distinct, saturated colours; instance i gets PALETTE[i % len].
PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (170, 110, 40),
]


def _to_pil(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if not torch.is_tensor(image) or image.dim() != 3 or image.shape[0] != 3:
        got = getattr(image, "shape", image)
        raise ValueError(f"image must be a PIL image or Tensor[3, H, W], got {got!r}")
    array = image.detach().cpu()
    if array.dtype.is_floating_point:
        array = (array.clamp(0, 1) * 255).round()
    return Image.fromarray(array.to(torch.uint8).permute(1, 2, 0).numpy())


def draw_predictions(
    image,
    prediction: dict,
    class_names: Sequence[str] | None = None,
    *,
    score_thresh: float = 0.5,
    mask_thresh: float = 0.5,
    keypoint_thresh: float = 0.0,
    skeleton: Sequence[tuple[int, int]] = (),
    mask_alpha: float = 0.45,
) -> Image.Image:
    """Return a new RGB image with the detections scoring at least ``score_thresh`` drawn over ``image``.

    ``class_names[label]`` names a label (index 0 is the background); missing names print the number.
    ``skeleton``: pairs of 0-based keypoint indices to join with lines. Keypoints are drawn where
    their score (``keypoints_scores``, when given) exceeds ``keypoint_thresh``.
    """
    canvas = _to_pil(image)
    width, height = canvas.size
    keep = (prediction["scores"].detach().cpu() >= score_thresh).nonzero().flatten().tolist()
    pixels = np.asarray(canvas, dtype=np.float32).copy()
    if "masks" in prediction:
        masks = prediction["masks"].detach().cpu()
        masks = masks[:, 0] if masks.dim() == 4 else masks
        if masks.shape[-2:] != (height, width) and len(masks):
            raise ValueError(f"masks are {tuple(masks.shape[-2:])} but the image is {(height, width)}")
        for rank, i in enumerate(keep):
            m = (masks[i] >= mask_thresh).numpy()
            colour = np.array(PALETTE[rank % len(PALETTE)], dtype=np.float32)
            pixels[m] = (1 - mask_alpha) * pixels[m] + mask_alpha * colour
    canvas = Image.fromarray(pixels.round().clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    boxes = prediction["boxes"].detach().cpu().tolist()
    labels = prediction["labels"].detach().cpu().tolist()
    scores = prediction["scores"].detach().cpu().tolist()
    kps = prediction.get("keypoints")
    kp_scores = prediction.get("keypoints_scores")
    for rank, i in enumerate(keep):
        colour = PALETTE[rank % len(PALETTE)]
        x1, y1, x2, y2 = boxes[i]
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=2)
        lab = labels[i]
        name = class_names[lab] if class_names is not None and 0 <= lab < len(class_names) else str(lab)
        text = f"{name} {scores[i]:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), text)
        ty = y1 - (bottom - top) - 2 if y1 - (bottom - top) - 2 >= 0 else y1
        draw.rectangle([x1, ty, x1 + (right - left) + 4, ty + (bottom - top) + 2], fill=colour)
        draw.text((x1 + 2, ty), text, fill=(0, 0, 0) if sum(colour) > 380 else (255, 255, 255))
        if kps is not None:
            points = kps[i].detach().cpu().tolist()
            # A third coordinate of 0 marks an unlabelled point (COCO visibility v = 0).
            shown = [len(p) < 3 or p[2] > 0 for p in points]
            if kp_scores is not None:
                scores_i = kp_scores[i].detach().cpu().tolist()
                shown = [v and s > keypoint_thresh for v, s in zip(shown, scores_i)]
            for a, b in skeleton:
                if shown[a] and shown[b]:
                    draw.line([tuple(points[a][:2]), tuple(points[b][:2])], fill=colour, width=1)
            for (x, y, *_), visible in zip(points, shown):
                if visible:
                    draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(255, 255, 255), outline=colour)
    return canvas
