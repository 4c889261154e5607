"""The two-stage detector skeleton: transform -> backbone -> RPN -> RoI heads -> postprocess."""

from __future__ import annotations

import torch
from torch import nn

from maskzoo.config import ModelConfig
from maskzoo.modeling.postprocess import postprocess


class RCNN(nn.Module):
    """Mask R-CNN / Keypoint R-CNN (FPN or C4), assembled by :mod:`maskzoo.modeling.build`.

    forward(images, targets=None):
        images: list of Tensor[3, H_i, W_i], float in [0, 1] or uint8, any sizes.
        targets (training): list of dicts with ``boxes`` Tensor[G, 4] float (x1, y1, x2, y2, input
        pixels), ``labels`` Tensor[G] int64 (1..num_classes-1), ``masks`` Tensor[G, H_i, W_i] (mask
        models), ``keypoints`` Tensor[G, P, 3] (keypoint models).
    Returns in training mode a dict of scalar losses (loss_objectness, loss_rpn_box_reg,
    loss_classifier, loss_box_reg, loss_mask, loss_keypoint as the model has them); in eval mode
    a list of dicts per image: ``boxes`` Tensor[D, 4] in input pixels, ``labels`` Tensor[D] int64,
    ``scores`` Tensor[D] (decreasing), ``masks`` Tensor[D, 1, H_i, W_i] probabilities,
    ``keypoints`` Tensor[D, P, 3] and ``keypoints_scores`` Tensor[D, P].
    """

    def __init__(self, config: ModelConfig, transform, backbone, rpn, roi_heads):
        super().__init__()
        self.config = config
        self.transform = transform
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads

    def forward(self, images, targets=None):
        if self.training:
            check_targets(self.config, images, targets)
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        batch, targets = self.transform(images, targets)
        features = self.backbone(batch.tensors)
        proposals, rpn_losses = self.rpn(batch, features, targets)
        detections, head_losses = self.roi_heads(features, proposals, batch.image_sizes, targets)
        if self.training:
            return {**rpn_losses, **head_losses}
        return postprocess(detections, batch.image_sizes, original_sizes, self.config)


def check_targets(config: ModelConfig, images, targets) -> None:
    """Raises ValueError / TypeError naming the image and key of the first malformed target."""
    if targets is None:
        raise ValueError("targets are required in training mode (call model.eval() for inference)")
    if not isinstance(targets, (list, tuple)) or len(targets) != len(images):
        raise ValueError(f"targets must be a list with one dict per image ({len(images)})")
    for i, t in enumerate(targets):
        required = (
            ["boxes", "labels"]
            + (["masks"] if config.mask is not None else [])
            + (["keypoints"] if config.keypoint is not None else [])
        )
        for key in required:
            if key not in t:
                raise ValueError(f"targets[{i}] has no {key!r}")
        boxes, labels = t["boxes"], t["labels"]
        if not boxes.is_floating_point() or boxes.dim() != 2 or boxes.shape[-1] != 4:
            raise TypeError(
                f"targets[{i}]['boxes'] must be a float Tensor[G, 4], got {boxes.dtype} {list(boxes.shape)}"
            )
        if labels.dtype != torch.int64 or labels.shape != boxes.shape[:1]:
            raise TypeError(
                f"targets[{i}]['labels'] must be an int64 Tensor[{boxes.shape[0]}], got "
                f"{labels.dtype} {list(labels.shape)}"
            )
        if labels.numel() and (labels.min() < 0 or labels.max() >= config.num_classes):
            raise ValueError(f"targets[{i}]['labels'] must be in [0, {config.num_classes - 1}]")
        degenerate = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
        if degenerate.any():
            j = int(torch.where(degenerate)[0][0])
            raise ValueError(
                f"targets[{i}]['boxes'][{j}] = {boxes[j].tolist()} has no positive width and height"
            )
        if config.mask is not None:
            masks = t["masks"]
            if (
                masks.dim() != 3
                or masks.shape[0] != boxes.shape[0]
                or tuple(masks.shape[1:]) != tuple(images[i].shape[-2:])
            ):
                raise ValueError(
                    f"targets[{i}]['masks'] must be Tensor[{boxes.shape[0]}, H, W] of the image's "
                    f"size {list(images[i].shape[-2:])}, got {list(masks.shape)}"
                )
        if config.keypoint is not None:
            kp = t["keypoints"]
            if (
                kp.dtype != torch.float32
                or kp.dim() != 3
                or kp.shape[0] != boxes.shape[0]
                or kp.shape[2] != 3
            ):
                raise TypeError(
                    f"targets[{i}]['keypoints'] must be a float32 Tensor[{boxes.shape[0]}, P, 3], got "
                    f"{kp.dtype} {list(kp.shape)}"
                )
