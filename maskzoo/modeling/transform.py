"""Image preparation inside the model: dtype, normalisation, resizing, batching; and the way back.

Images come in as a list of CHW tensors of any sizes, float in [0, 1] or uint8 in [0, 255]. Each is
normalised, then resized so that its shorter side is ``min_size`` unless its longer side would
exceed ``max_size`` (bilinear, one scale factor for both axes), then the list is zero-padded
bottom/right into one batch whose height and width are multiples of ``size_divisible``.
Detections are mapped back into each input image's own pixel coordinates by
:func:`maskzoo.modeling.postprocess.postprocess`.

Numerics follow torchvision's GeneralizedRCNNTransform (normalise before resizing, interpolate with
``scale_factor`` and ``recompute_scale_factor=True``, float32 size ratios), so that converted
torchvision weights see the same tensors.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from maskzoo.config import TransformConfig


class ImageBatch(NamedTuple):
    """Padded batch Tensor[N, 3, H, W] and each image's (height, width) inside it after resizing."""

    tensors: torch.Tensor
    image_sizes: list[tuple[int, int]]


def to_float_image(image: torch.Tensor, index: int = 0, uint8_divisor: float = 255.0) -> torch.Tensor:
    """A CHW float image in [0, 1]: uint8 is divided by ``uint8_divisor`` (255); float stays as it is."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"images[{index}] must be a torch.Tensor, got {type(image).__name__}")
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"images[{index}] must have shape [3, H, W], got {list(image.shape)}")
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"images[{index}] is empty: shape {list(image.shape)}")
    if image.dtype == torch.uint8:
        image = image.to(torch.float32)
        return image if uint8_divisor == 1.0 else image / uint8_divisor
    if not image.is_floating_point():
        raise TypeError(f"images[{index}] must be float in [0, 1] or uint8, got {image.dtype}")
    return image


def resize_boxes(boxes: torch.Tensor, old_size, new_size) -> torch.Tensor:
    """Scales Tensor[K, 4] (x1, y1, x2, y2) from an image of ``old_size`` (h, w) to ``new_size``."""
    ratio_h = torch.tensor(new_size[0], dtype=torch.float32, device=boxes.device) / torch.tensor(
        old_size[0], dtype=torch.float32, device=boxes.device
    )
    ratio_w = torch.tensor(new_size[1], dtype=torch.float32, device=boxes.device) / torch.tensor(
        old_size[1], dtype=torch.float32, device=boxes.device
    )
    x1, y1, x2, y2 = boxes.unbind(1)
    return torch.stack((x1 * ratio_w, y1 * ratio_h, x2 * ratio_w, y2 * ratio_h), dim=1)


def resize_keypoints(keypoints: torch.Tensor, old_size, new_size) -> torch.Tensor:
    """Scales Tensor[K, P, 3] (x, y, visibility) from ``old_size`` (h, w) to ``new_size``."""
    ratio_h = torch.tensor(new_size[0], dtype=torch.float32, device=keypoints.device) / torch.tensor(
        old_size[0], dtype=torch.float32, device=keypoints.device
    )
    ratio_w = torch.tensor(new_size[1], dtype=torch.float32, device=keypoints.device) / torch.tensor(
        old_size[1], dtype=torch.float32, device=keypoints.device
    )
    out = keypoints.clone()
    out[..., 0] *= ratio_w
    out[..., 1] *= ratio_h
    return out


class Transform(nn.Module):
    """Normalise, resize and batch images (and resize their targets).

    forward(images: list of Tensor[3, H_i, W_i], targets: list of dict | None)
        -> (ImageBatch, targets with boxes / masks / keypoints in resized coordinates)
    """

    def __init__(self, config: TransformConfig):
        super().__init__()
        self.config = config

    def forward(self, images, targets=None):
        if not isinstance(images, (list, tuple)):
            raise TypeError(f"images must be a list of [3, H, W] tensors, got {type(images).__name__}")
        if len(images) == 0:
            raise ValueError("images is an empty list")
        if targets is not None and len(targets) != len(images):
            raise ValueError(f"got {len(images)} images but {len(targets)} targets")
        resized, new_targets = [], []
        for i, image in enumerate(images):
            image = self.normalize(self.to_pixels(image, i))
            target = None if targets is None else dict(targets[i])
            image, target = self.resize(image, target)
            resized.append(image)
            new_targets.append(target)
        sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in resized]
        return ImageBatch(self.batch(resized), sizes), (None if targets is None else new_targets)

    def to_pixels(self, image: torch.Tensor, index: int = 0) -> torch.Tensor:
        """A CHW float image in the units and channel order the weights expect: RGB in [0, 1] times
        ``pixel_scale``, channels reversed for "BGR". uint8 input with pixel_scale 255 is converted
        exactly (no division by 255 and multiplication back)."""
        c = self.config
        exact_uint8 = float(c.pixel_scale) == 255.0
        is_uint8 = isinstance(image, torch.Tensor) and image.dtype == torch.uint8
        image = to_float_image(image, index, uint8_divisor=1.0 if exact_uint8 else 255.0)
        if float(c.pixel_scale) != 1.0 and not (is_uint8 and exact_uint8):
            image = image * float(c.pixel_scale)
        if c.channel_order == "BGR":
            image = image.flip(0)
        return image

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        mean = torch.as_tensor(self.config.image_mean, dtype=image.dtype, device=image.device)
        std = torch.as_tensor(self.config.image_std, dtype=image.dtype, device=image.device)
        return (image - mean[:, None, None]) / std[:, None, None]

    def target_min_size(self) -> int:
        sizes = self.config.min_size
        if self.training:
            # Multi-scale training: one shorter side drawn per image from torch's RNG (drawn even
            # for a single size, so that a seeded run samples the same RoIs as torchvision's).
            return int(sizes[int(torch.empty(1).uniform_(0.0, float(len(sizes))).item())])
        return int(sizes[-1])

    def resize(self, image: torch.Tensor, target: dict | None):
        h, w = image.shape[-2:]
        scale = min(self.target_min_size() / min(h, w), self.config.max_size / max(h, w))
        image = F.interpolate(
            image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False
        )[0]
        if target is None:
            return image, None
        new_size = image.shape[-2:]
        if "boxes" in target:
            target["boxes"] = resize_boxes(target["boxes"], (h, w), new_size)
        if "masks" in target:
            masks = target["masks"]
            target["masks"] = F.interpolate(
                masks[:, None].float(), scale_factor=scale, recompute_scale_factor=True
            )[:, 0].byte()
        if "keypoints" in target:
            target["keypoints"] = resize_keypoints(target["keypoints"], (h, w), new_size)
        return image, target

    def batch(self, images: list[torch.Tensor]) -> torch.Tensor:
        # Rounded up in integers: under torch.compile a float ceil makes every size downstream an
        # expression that Inductor's sympy simplification takes minutes over.
        d = int(self.config.size_divisible)
        height = (max(img.shape[1] for img in images) + d - 1) // d * d
        width = (max(img.shape[2] for img in images) + d - 1) // d * d
        # Padded out of place rather than copied into a zero canvas: under torch.compile with
        # Inductor's freezing, torch 2.14 fails to compile the in-place copies.
        padded = [F.pad(img, (0, width - img.shape[2], 0, height - img.shape[1])) for img in images]
        return padded[0][None] if len(padded) == 1 else torch.stack(padded)
