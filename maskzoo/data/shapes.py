"""A synthetic instance-segmentation data set in COCO format: overlapping circles, squares, triangles.

Every image is drawn from its own random stream, ``numpy.random.default_rng([seed, split, index])``,
so a data set is exactly reproducible from its seed (byte-identical PNG and JSON files), and the
first N images of a split do not depend on how many images are generated after them.

What an image holds:

- a textured background (a colour gradient, stripes at a random angle, pixel noise);
- 1 to ``max_shapes`` shapes of random size, colour and rotation, drawn one over the other, so
  later shapes occlude earlier ones. A placement that would hide more than ``max_occlusion`` of an
  earlier shape is rejected and drawn again, so every instance keeps most of its area;
- per instance, the *visible* mask (its shape minus everything drawn over it) as a COCO RLE, the box
  of that mask, its area, and four keypoints: the extreme points of the full shape, in the order
  ``left, top, right, bottom`` (the corners of squares and triangles, rotated so that they are
  unique; for circles the points on the circle). Visibility follows COCO: 2 = labelled and
  visible, 1 = labelled but hidden by a later shape, 0 = outside the image (then x = y = 0).

A horizontal flip swaps ``left`` and ``right`` (:data:`KEYPOINT_FLIP_PAIRS`).

Coordinates are continuous pixel coordinates: pixel (i, j) covers [j, j + 1) x [i, i + 1), its
centre is (j + 0.5, i + 0.5). Masks are binary (the shape covers a pixel when its centre is inside
it), so the masks, boxes and keypoints agree exactly.
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from maskzoo.files import write_atomic

CATEGORIES = ("circle", "square", "triangle")
KEYPOINT_NAMES = ("left", "top", "right", "bottom")
KEYPOINT_FLIP_PAIRS = ((0, 2),)
# Per-keypoint OKS sigmas (COCO's keypoint metric needs one per keypoint). Corners are precise
# landmarks, about as well defined as the eyes of COCO persons (0.025) -- we use a little more.
KEYPOINT_SIGMAS = (0.05, 0.05, 0.05, 0.05)
_SPLIT_IDS = {"train": 0, "val": 1}


@dataclass(frozen=True)
class ShapesConfig:
    """What the generator draws. Sizes are in pixels."""

    image_size: int = 256  # images are square, image_size x image_size
    min_shapes: int = 1
    max_shapes: int = 4
    min_radius: float = 20.0  # circumradius of a shape
    max_radius: float = 56.0
    max_occlusion: float = 0.5  # most of an earlier shape's area a later one may hide
    min_visible_pixels: int = 64  # smaller visible remnants are rejected too
    placement_attempts: int = 50  # per shape; the image gets fewer shapes when all fail

    def __post_init__(self):
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}")
        if not 1 <= self.min_shapes <= self.max_shapes:
            raise ValueError(
                f"need 1 <= min_shapes <= max_shapes, got min_shapes={self.min_shapes}, "
                f"max_shapes={self.max_shapes}"
            )
        if not 0 < self.min_radius <= self.max_radius:
            raise ValueError(f"need 0 < min_radius <= max_radius, got {self.min_radius}, {self.max_radius}")
        if not 0.0 <= self.max_occlusion < 1.0:
            raise ValueError(f"max_occlusion must be in [0, 1), got {self.max_occlusion}")


def _pixel_centres(size: int) -> tuple[np.ndarray, np.ndarray]:
    centres = np.arange(size, dtype=np.float64) + 0.5
    return np.meshgrid(centres, centres)  # xs, ys: [size, size]


def _polygon_mask(vertices: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Pixels whose centre lies inside the convex polygon ``vertices`` (counter-clockwise in y-down)."""
    inside = np.ones(xs.shape, dtype=bool)
    n = len(vertices)
    # Sign of the cross product edge x (point - start) is the same for every edge when inside.
    signs = []
    for k in range(n):
        (x0, y0), (x1, y1) = vertices[k], vertices[(k + 1) % n]
        signs.append((x1 - x0) * (ys - y0) - (y1 - y0) * (xs - x0))
    positive = np.ones(xs.shape, dtype=bool)
    negative = np.ones(xs.shape, dtype=bool)
    for s in signs:
        positive &= s >= 0
        negative &= s <= 0
    inside &= positive | negative
    return inside


def _extreme_points(points: np.ndarray) -> np.ndarray:
    """left, top, right, bottom points of a point set: Tensor[4, 2] as (x, y)."""
    return np.stack(
        [
            points[np.argmin(points[:, 0])],
            points[np.argmin(points[:, 1])],
            points[np.argmax(points[:, 0])],
            points[np.argmax(points[:, 1])],
        ]
    )


def _random_shape(rng: np.random.Generator, cfg: ShapesConfig, xs, ys):
    """One shape: (category index, full mask [S, S] bool, keypoints [4, 2] float64)."""
    size = cfg.image_size
    category = int(rng.integers(len(CATEGORIES)))
    radius = float(rng.uniform(cfg.min_radius, cfg.max_radius))
    # The centre may lie near the border, so shapes are sometimes cut by the image edge.
    cx, cy = rng.uniform(0.1 * size, 0.9 * size, size=2)
    if CATEGORIES[category] == "circle":
        mask = (xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2
        keypoints = np.array([[cx - radius, cy], [cx, cy - radius], [cx + radius, cy], [cx, cy + radius]])
        return category, mask, keypoints
    n = 4 if CATEGORIES[category] == "square" else 3
    # Angles away from multiples of 90 deg (squares) or 30 deg (triangles), so that each extreme
    # point is a single, well-defined corner rather than an edge.
    period = 2 * math.pi / n
    base = float(rng.uniform(0.15, 0.85)) * period / (2 if n == 3 else 1)
    angles = base + period * np.arange(n)
    if n == 3:
        # Mildly irregular triangles: jitter each corner's angle.
        angles = angles + rng.uniform(-0.25, 0.25, size=3)
    vertices = np.stack([cx + radius * np.cos(angles), cy - radius * np.sin(angles)], axis=1)
    # Counter-clockwise in a y-up frame is clockwise in a y-down frame; _polygon_mask accepts both.
    return category, _polygon_mask(vertices, xs, ys), _extreme_points(vertices)


def _background(rng: np.random.Generator, size: int, xs, ys) -> np.ndarray:
    """A textured background: two-colour gradient, stripes at a random angle, pixel noise. [S, S, 3]."""
    c0, c1 = rng.uniform(0, 255, size=(2, 3))
    angle = rng.uniform(0, 2 * math.pi)
    t = ((xs * math.cos(angle) + ys * math.sin(angle)) / size + 1.0) / 2.0
    image = c0 * (1 - t[..., None]) + c1 * t[..., None]
    stripe_angle = rng.uniform(0, math.pi)
    period = rng.uniform(6, 24)
    phase = (xs * math.cos(stripe_angle) + ys * math.sin(stripe_angle)) * (2 * math.pi / period)
    image += rng.uniform(5, 30) * np.sin(phase)[..., None]
    image += rng.normal(0, rng.uniform(2, 12), size=image.shape)
    return image


def _contrasting_colour(rng: np.random.Generator, background_mean: np.ndarray) -> np.ndarray:
    # Reject colours too close to the local background so every shape can be seen.
    for _ in range(20):
        colour = rng.uniform(0, 255, size=3)
        if np.abs(colour - background_mean).sum() > 120:
            return colour
    return 255.0 - background_mean


def generate_image(cfg: ShapesConfig, seed: int, split: str, index: int):
    """Draw one image: (uint8 array [S, S, 3], list of instance dicts).

    Each instance dict holds ``category`` (index into :data:`CATEGORIES`), ``mask`` (bool [S, S],
    visible part), ``keypoints`` (float64 [4, 3]: x, y, visibility).
    """
    if split not in _SPLIT_IDS:
        raise ValueError(f"split must be one of {sorted(_SPLIT_IDS)}, got {split!r}")
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
    size = cfg.image_size
    xs, ys = _pixel_centres(size)
    image = _background(rng, size, xs, ys)
    wanted = int(rng.integers(cfg.min_shapes, cfg.max_shapes + 1))
    shapes = []  # (category, full mask, keypoints, colour)
    visible = []  # visible masks, updated as shapes are drawn over
    for _ in range(wanted):
        for _attempt in range(cfg.placement_attempts):
            category, mask, keypoints = _random_shape(rng, cfg, xs, ys)
            area = int(mask.sum())
            if area < cfg.min_visible_pixels:
                continue
            remaining = [v & ~mask for v in visible]
            ok = all(
                r.sum() >= max(cfg.min_visible_pixels, (1 - cfg.max_occlusion) * s[1].sum())
                for r, s in zip(remaining, shapes)
            )
            if ok:
                colour = _contrasting_colour(rng, image[mask].mean(axis=0))
                shapes.append((category, mask, keypoints, colour))
                visible = remaining + [mask.copy()]
                break
    for _category, mask, _keypoints, colour in shapes:
        # Shapes are shaded a little (a gradient and noise), so colour alone is not the answer.
        rows = ys[mask]
        shade = rng.uniform(0.8, 1.2) + 0.15 * (rows - rows.mean()) / max(1.0, float(np.ptp(rows)))
        image[mask] = colour * shade[:, None] + rng.normal(0, 4, size=(int(mask.sum()), 3))
    instances = []
    for (category, _mask, keypoints, _colour), vis in zip(shapes, visible):
        kps = np.zeros((len(KEYPOINT_NAMES), 3))
        for k, (x, y) in enumerate(keypoints):
            if 0 <= x < size and 0 <= y < size:
                # Visible when the pixel under the point (or the one just inside the shape's
                # edge) is still this shape's.
                col, row = min(int(x), size - 1), min(int(y), size - 1)
                inside = _near_mask(vis, row, col)
                kps[k] = (x, y, 2 if inside else 1)
        instances.append({"category": category, "mask": vis, "keypoints": kps})
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), instances


def _near_mask(mask: np.ndarray, row: int, col: int) -> bool:
    # Extreme points lie on the shape's boundary, where the pixel itself may fall just outside.
    r0, r1 = max(row - 1, 0), min(row + 2, mask.shape[0])
    c0, c1 = max(col - 1, 0), min(col + 2, mask.shape[1])
    return bool(mask[r0:r1, c0:c1].any())


def _coco_categories() -> list[dict]:
    return [
        {
            "id": i + 1,
            "name": name,
            "supercategory": "shape",
            "keypoints": list(KEYPOINT_NAMES),
            "skeleton": [[1, 2], [2, 3], [3, 4], [4, 1]],
            # Not part of the COCO format; maskzoo's evaluation reads it for the keypoint metric.
            "keypoint_sigmas": list(KEYPOINT_SIGMAS),
        }
        for i, name in enumerate(CATEGORIES)
    ]


def write_split(out: str | os.PathLike, split: str, count: int, seed: int, cfg: ShapesConfig) -> Path:
    """Write ``count`` images of ``split`` to ``out/split/`` and ``out/split.json``; returns the JSON path."""
    # pycocotools is an optional dependency (the maskzoo extra): imported when masks are encoded.
    from pycocotools import mask as mask_utils

    out = Path(out)
    image_dir = out / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        pixels, instances = generate_image(cfg, seed, split, index)
        file_name = f"{index:06d}.png"
        write_atomic(image_dir / file_name, _png(pixels))
        image_id = index + 1
        images.append(
            {"id": image_id, "file_name": file_name, "width": cfg.image_size, "height": cfg.image_size}
        )
        for inst in instances:
            rle = mask_utils.encode(np.asfortranarray(inst["mask"].astype(np.uint8)))
            x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
            kps = inst["keypoints"]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": inst["category"] + 1,
                    "segmentation": {
                        "size": [int(s) for s in rle["size"]],
                        "counts": rle["counts"].decode("ascii"),
                    },
                    "area": float(mask_utils.area(rle)),
                    "bbox": [x, y, w, h],
                    "iscrowd": 0,
                    "keypoints": [round(float(v), 3) for v in kps.reshape(-1)],
                    "num_keypoints": int((kps[:, 2] > 0).sum()),
                }
            )
    dataset = {
        "info": {
            "description": f"maskzoo shapes, split {split}, seed {seed}",
            "generator": asdict(cfg),
            "seed": seed,
            "split": split,
        },
        "images": images,
        "annotations": annotations,
        "categories": _coco_categories(),
    }
    json_path = out / f"{split}.json"
    write_atomic(json_path, json.dumps(dataset, indent=None, separators=(",", ":")))
    return json_path


def _png(pixels: np.ndarray) -> bytes:
    """``pixels`` (``uint8[H, W, 3]``) encoded as PNG, the same bytes for the same pixels."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def write_dataset(
    out: str | os.PathLike, train: int, val: int, seed: int = 0, cfg: ShapesConfig | None = None
) -> dict[str, Path]:
    """Write a train and a val split under ``out``: ``{split}.json`` + ``{split}/NNNNNN.png``.

    Returns ``{"train": path of train.json, "val": path of val.json}`` (a split with count 0 is
    skipped). Raises ``ValueError`` for negative counts.
    """
    cfg = cfg or ShapesConfig()
    if train < 0 or val < 0:
        raise ValueError(f"train and val must be >= 0, got train={train}, val={val}")
    paths = {}
    for split, count in (("train", train), ("val", val)):
        if count:
            paths[split] = write_split(out, split, count, seed, cfg)
    return paths
