"""A COCO-format instance data set (annotation JSON + image folder) for training and evaluation.

Built on pycocotools for the mask decoding (polygons and RLE, compressed or not). Images are read
with Pillow and returned as ``Tensor[3, H, W]`` float32 in [0, 1].

Targets follow the convention of maskzoo's models (and torchvision's):

- ``boxes``: ``Tensor[N, 4]`` float32, (x1, y1, x2, y2) in continuous pixel coordinates (COCO's
  ``[x, y, w, h]`` becomes ``[x, y, x + w, y + h]``);
- ``labels``: ``Tensor[N]`` int64, contiguous class indices 1..C (0 is background), in the order of
  the sorted COCO category ids (:attr:`CocoDataset.category_ids` maps back);
- ``masks``: ``Tensor[N, H, W]`` uint8 in {0, 1};
- ``keypoints`` (when the categories declare keypoints): ``Tensor[N, K, 3]`` float32, (x, y, v) with
  COCO visibility v in {0, 1, 2}; x, y are COCO's keypoint coordinates unchanged;
- ``image_id``: int, the COCO image id; ``orig_size``: (H, W).

Bad input: a missing annotation file raises ``FileNotFoundError``; a file that is not JSON or lacks
``images``/``annotations``/``categories`` raises ``ValueError`` naming the file. A single bad
annotation (empty or malformed polygon, box of zero or negative size, box outside its image,
category id not among the categories, keypoints of the wrong length) is skipped with a
``UserWarning`` naming the file and the annotation id; boxes partly outside the image are clipped.
An image that cannot be decoded raises ``ValueError`` naming the image file when it is loaded.
Crowd annotations (``iscrowd=1``) are never training targets (they only matter to the evaluation,
which reads the annotation file itself).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = ["CocoDataset", "load_image", "decode_segmentation"]


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file as ``Tensor[3, H, W]`` float32 in [0, 1] (RGB).

    Raises ``FileNotFoundError`` when it does not exist, ``ValueError`` naming the file when Pillow
    cannot decode it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            array = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot decode image {path}: {err}") from err
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


def _polygon_problem(segmentation) -> str | None:
    if not isinstance(segmentation, list) or len(segmentation) == 0:
        return "empty polygon list"
    for poly in segmentation:
        if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
            return "a polygon needs an even number (>= 6) of coordinates"
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in poly):
            return "polygon coordinates must be finite numbers"
    return None


def _rle_problem(segmentation, height: int, width: int) -> str | None:
    size, counts = segmentation.get("size"), segmentation.get("counts")
    if not (isinstance(size, list) and len(size) == 2):
        return "RLE needs 'size': [height, width]"
    if list(size) != [height, width]:
        return f"RLE size {size} differs from the image size {[height, width]}"
    if not isinstance(counts, (list, str)):
        return "RLE 'counts' must be a list or a string"
    return None


def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """COCO segmentation (polygon list, RLE dict with list or string counts) -> uint8 [H, W] mask."""
    # pycocotools is an optional dependency (the maskzoo extra): imported when masks are decoded.
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        rles = mask_utils.frPyObjects(segmentation, height, width)
        rle = mask_utils.merge(rles)
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    return mask_utils.decode(rle)


def _read_annotation_file(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"annotation file {path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"annotation file {path} must hold a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"annotation file {path} lacks a '{key}' list (is it COCO instances format?)")
    for image in data["images"]:
        if not isinstance(image, dict) or not {"id", "file_name", "width", "height"} <= image.keys():
            raise ValueError(
                f"annotation file {path}: every image needs id, file_name, width, height; got {image!r:.200}"
            )
    for cat in data["categories"]:
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise ValueError(f"annotation file {path}: every category needs id and name; got {cat!r:.200}")
    return data


class CocoDataset(torch.utils.data.Dataset):
    """Images and instance targets of a COCO-format annotation file.

    Args:
        annotation_file: the COCO instances JSON (``images``, ``annotations``, ``categories``).
        image_dir: folder that ``file_name`` of each image is relative to.
        transforms: optional ``callable(image, target, generator) -> (image, target)`` (see
            :mod:`maskzoo.data.transforms`); ``generator`` is a ``torch.Generator`` or None.
        train: training mode drops crowd annotations and (with ``drop_empty``) images left without
            any annotation; evaluation mode keeps every image.
        drop_empty: in training mode, skip images without usable annotations.
        keypoints: return ``keypoints`` targets (default: when the categories declare keypoints).

    ``dataset[i]`` gives ``(image Tensor[3, H, W], target dict)``; ``dataset.get(i, generator)``
    the same with a random stream for the transforms (exactly reproducible augmentation).
    """

    def __init__(
        self,
        annotation_file: str | os.PathLike,
        image_dir: str | os.PathLike,
        *,
        transforms: Callable | None = None,
        train: bool = True,
        drop_empty: bool = True,
        keypoints: bool | None = None,
    ):
        self.annotation_file = Path(annotation_file)
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"image_dir is not a folder: {self.image_dir}")
        data = _read_annotation_file(self.annotation_file)
        self.transforms = transforms
        self.train = train
        self.categories = sorted(data["categories"], key=lambda c: c["id"])
        self.category_ids = [c["id"] for c in self.categories]  # label l -> category_ids[l - 1]
        self.class_names = ["__background__"] + [c["name"] for c in self.categories]
        self._label_of = {cid: i + 1 for i, cid in enumerate(self.category_ids)}
        kp_counts = {len(c.get("keypoints", [])) for c in self.categories if c.get("keypoints")}
        if len(kp_counts) > 1:
            raise ValueError(
                f"annotation file {self.annotation_file}: categories declare different "
                f"numbers of keypoints {sorted(kp_counts)}; one model predicts one set"
            )
        self.num_keypoints = kp_counts.pop() if kp_counts else 0
        self.keypoint_names = next((c["keypoints"] for c in self.categories if c.get("keypoints")), [])
        self.with_keypoints = self.num_keypoints > 0 if keypoints is None else bool(keypoints)
        if self.with_keypoints and self.num_keypoints == 0:
            raise ValueError(f"keypoints=True but no category in {self.annotation_file} declares keypoints")

        images = {img["id"]: img for img in data["images"]}
        per_image: dict[int, list[dict]] = {i: [] for i in images}
        for ann in data["annotations"]:
            checked = self._check_annotation(ann, images)
            if checked is not None:
                per_image[ann["image_id"]].append(checked)
        ids = sorted(images)
        if train and drop_empty:
            ids = [i for i in ids if per_image[i]]
        self.image_ids = ids
        self._images = images
        self._annotations = per_image

    @property
    def num_classes(self) -> int:
        """Number of classes including the background (what a model's ``num_classes`` expects)."""
        return len(self.categories) + 1

    def _skip(self, ann, why: str) -> None:
        warnings.warn(
            f"{self.annotation_file}: skipping annotation id {ann.get('id')!r}: {why}",
            UserWarning,
            stacklevel=3,
        )

    def _check_annotation(self, ann, images) -> dict | None:
        if not isinstance(ann, dict):
            raise ValueError(
                f"annotation file {self.annotation_file}: annotations must be objects, got {ann!r:.200}"
            )
        image = images.get(ann.get("image_id"))
        if image is None:
            return self._skip(ann, f"image_id {ann.get('image_id')!r} is not among the images")
        if self.train and ann.get("iscrowd", 0):
            return None  # crowd regions are ignored in training (they only matter to evaluation)
        if ann.get("category_id") not in self._label_of:
            return self._skip(
                ann, f"category_id {ann.get('category_id')!r} is not among the categories {self.category_ids}"
            )
        bbox = ann.get("bbox")
        if not (
            isinstance(bbox, list)
            and len(bbox) == 4
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)
        ):
            return self._skip(ann, f"bbox must be 4 finite numbers [x, y, w, h], got {bbox!r:.100}")
        x, y, w, h = bbox
        if w <= 0 or h <= 0:
            return self._skip(ann, f"bbox {bbox} has no area")
        width, height = image["width"], image["height"]
        x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)
        if x2 <= x1 or y2 <= y1:
            return self._skip(
                ann, f"bbox {bbox} lies outside its image {image['file_name']} ({width} x {height})"
            )
        seg = ann.get("segmentation")
        if seg is None:
            return self._skip(ann, "no segmentation")
        problem = _rle_problem(seg, height, width) if isinstance(seg, dict) else _polygon_problem(seg)
        if problem is not None:
            return self._skip(ann, f"invalid segmentation: {problem}")
        keypoints = None
        if self.with_keypoints:
            kps = ann.get("keypoints")
            if kps is None:
                kps = [0] * (3 * self.num_keypoints)
            if not (isinstance(kps, list) and len(kps) == 3 * self.num_keypoints):
                return self._skip(ann, f"keypoints must be a list of {3 * self.num_keypoints} numbers")
            keypoints = kps
        return {
            "id": ann.get("id"),
            "box": [x1, y1, x2, y2],
            "label": self._label_of[ann["category_id"]],
            "segmentation": seg,
            "keypoints": keypoints,
        }

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int):
        return self.get(index, None)

    def image_info(self, index: int) -> dict:
        """The COCO ``images`` entry of item ``index``."""
        return self._images[self.image_ids[index]]

    def get(self, index: int, generator: torch.Generator | None):
        """Item ``index`` with ``generator`` driving the random transforms (None: torch's global one)."""
        image_id = self.image_ids[index]
        info = self._images[image_id]
        path = self.image_dir / info["file_name"]
        image = load_image(path)
        height, width = image.shape[-2:]
        if (height, width) != (info["height"], info["width"]):
            raise ValueError(
                f"image {path} is {width} x {height} but {self.annotation_file} says "
                f"{info['width']} x {info['height']}"
            )
        anns = self._annotations[image_id]
        masks = np.zeros((len(anns), height, width), dtype=np.uint8)
        for i, ann in enumerate(anns):
            try:
                masks[i] = decode_segmentation(ann["segmentation"], height, width)
            except Exception as err:  # pycocotools raises bare Exceptions on malformed RLE strings
                raise ValueError(
                    f"{self.annotation_file}: annotation id {ann['id']!r} has a segmentation "
                    f"that cannot be decoded: {err}"
                ) from err
        target = {
            "boxes": torch.tensor([a["box"] for a in anns], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([a["label"] for a in anns], dtype=torch.int64),
            "masks": torch.from_numpy(masks),
            "image_id": image_id,
            "orig_size": (height, width),
        }
        if self.with_keypoints:
            kps = torch.tensor([a["keypoints"] for a in anns], dtype=torch.float32)
            target["keypoints"] = kps.reshape(len(anns), self.num_keypoints, 3)
        if self.transforms is not None:
            image, target = self.transforms(image, target, generator)
        return image, target
