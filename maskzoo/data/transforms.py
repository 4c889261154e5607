"""Training transforms of Mask R-CNN (He et al. 2017, section 3.1): multi-scale resize and flip.

Every transform is a ``callable(image, target, generator) -> (image, target)``: ``image`` is
``Tensor[3, H, W]``, ``target`` the dict of :class:`maskzoo.data.coco.CocoDataset` (``boxes``
``Tensor[N, 4]`` x1, y1, x2, y2 in continuous pixel coordinates, ``masks`` ``Tensor[N, H, W]``,
optional ``keypoints`` ``Tensor[N, K, 3]``), ``generator`` a ``torch.Generator`` (or None for the
global stream) that makes the random choices, so augmentation is exactly reproducible from a seed.

Note that maskzoo's models resize their inputs themselves (their config's ``min_size``/``max_size``);
:class:`ResizeShortestSide` is for pipelines that want the resizing done in the data loader.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "Compose",
    "ResizeShortestSide",
    "RandomHorizontalFlip",
    "COCO_PERSON_KEYPOINT_FLIP_PAIRS",
    "flip_pair_permutation",
    "default_train_transforms",
    "flip_pairs_from_names",
]

# COCO person keypoints: 0 nose, then (left, right) pairs of eyes, ears, shoulders, elbows, wrists,
# hips, knees, ankles.
COCO_PERSON_KEYPOINT_FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))


def flip_pair_permutation(num_keypoints: int, flip_pairs: Sequence[tuple[int, int]]) -> list[int]:
    """Index permutation that a horizontal flip applies to ``num_keypoints`` keypoints."""
    perm = list(range(num_keypoints))
    for a, b in flip_pairs:
        if not (0 <= a < num_keypoints and 0 <= b < num_keypoints):
            raise ValueError(f"flip_pairs: pair {(a, b)} out of range for {num_keypoints} keypoints")
        perm[a], perm[b] = b, a
    return perm


class Compose:
    """Apply transforms in order, passing the same generator to each."""

    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, image, target, generator=None):
        for t in self.transforms:
            image, target = t(image, target, generator)
        return image, target


class ResizeShortestSide:
    """Resize so the shorter side is a size drawn from ``min_sizes`` and the longer at most ``max_size``.

    Defaults are the paper's: shorter side in 640..800 step 32, longer <= 1333. The image is
    resampled bilinearly (half-pixel centres), masks by nearest neighbour, boxes and keypoints scaled
    by the same factor (keypoints with v = 0 are left at 0).
    """

    def __init__(self, min_sizes: Sequence[int] = tuple(range(640, 801, 32)), max_size: int = 1333):
        if len(min_sizes) == 0 or min(min_sizes) <= 0:
            raise ValueError(f"min_sizes must be positive sizes, got {min_sizes!r}")
        if max_size <= 0:
            raise ValueError(f"max_size must be positive, got {max_size}")
        self.min_sizes = tuple(int(s) for s in min_sizes)
        self.max_size = int(max_size)

    def __call__(self, image, target, generator=None):
        pick = int(torch.randint(len(self.min_sizes), (1,), generator=generator))
        h, w = image.shape[-2:]
        scale = min(self.min_sizes[pick] / min(h, w), self.max_size / max(h, w))
        new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
        if (new_h, new_w) == (h, w):
            return image, target
        image = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False)[0]
        target = dict(target)
        sx, sy = new_w / w, new_h / h
        target["boxes"] = target["boxes"] * torch.tensor([sx, sy, sx, sy])
        if "masks" in target and target["masks"].shape[0]:
            target["masks"] = F.interpolate(
                target["masks"][None].float(), size=(new_h, new_w), mode="nearest"
            )[0].to(target["masks"].dtype)
        elif "masks" in target:
            target["masks"] = target["masks"].new_zeros((0, new_h, new_w))
        if "keypoints" in target:
            kps = target["keypoints"].clone()
            kps[..., 0] *= sx
            kps[..., 1] *= sy
            target["keypoints"] = kps
        return image, target


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``; keypoint pairs in ``flip_pairs`` swap places.

    In continuous coordinates a point x goes to ``W - x`` and a box (x1, x2) to (W - x2, W - x1).
    """

    def __init__(self, p: float = 0.5, flip_pairs: Sequence[tuple[int, int]] = ()):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = float(p)
        self.flip_pairs = tuple(tuple(pair) for pair in flip_pairs)

    def __call__(self, image, target, generator=None):
        if float(torch.rand((), generator=generator)) >= self.p:
            return image, target
        return hflip(image, target, self.flip_pairs)


def hflip(image, target, flip_pairs=()):
    """Mirror an image and its target left-right (see :class:`RandomHorizontalFlip`)."""
    width = image.shape[-1]
    image = image.flip(-1)
    target = dict(target)
    boxes = target["boxes"].clone()
    boxes[:, 0], boxes[:, 2] = width - target["boxes"][:, 2], width - target["boxes"][:, 0]
    target["boxes"] = boxes
    if "masks" in target:
        target["masks"] = target["masks"].flip(-1)
    if "keypoints" in target:
        kps = target["keypoints"].clone()
        labelled = kps[..., 2] > 0
        kps[..., 0] = torch.where(labelled, width - kps[..., 0], kps[..., 0])
        perm = flip_pair_permutation(kps.shape[1], flip_pairs)
        target["keypoints"] = kps[:, perm]
    return image, target


def default_train_transforms(
    flip_pairs: Sequence[tuple[int, int]] = (),
    resize: bool = False,
    min_sizes: Sequence[int] = tuple(range(640, 801, 32)),
    max_size: int = 1333,
):
    """The paper's training augmentation: (optional) multi-scale resize, then a horizontal flip."""
    steps = [ResizeShortestSide(min_sizes, max_size)] if resize else []
    steps.append(RandomHorizontalFlip(0.5, flip_pairs))
    return Compose(steps)


def flip_pairs_from_names(names: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """Keypoint pairs that swap under a horizontal flip, found by name: every name containing "left"
    pairs with the same name with "right" in its place (COCO's ``left_eye``/``right_eye``, the shapes
    set's ``left``/``right``)."""
    index = {n: i for i, n in enumerate(names)}
    pairs = []
    for i, name in enumerate(names):
        if "left" in name:
            j = index.get(name.replace("left", "right"))
            if j is not None:
                pairs.append((i, j))
    return tuple(pairs)
