import hashlib
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from maskzoo.data.shapes import CATEGORIES, KEYPOINT_NAMES, ShapesConfig, generate_image, write_dataset


def _digest(root):
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_same_seed_writes_byte_identical_files(tmp_path, tiny_shapes_config):
    a = write_dataset(tmp_path / "a", train=3, val=2, seed=11, cfg=tiny_shapes_config)
    b = write_dataset(tmp_path / "b", train=3, val=2, seed=11, cfg=tiny_shapes_config)
    assert set(a) == set(b) == {"train", "val"}
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")


def test_different_seed_or_split_draws_different_images(tiny_shapes_config):
    a, _ = generate_image(tiny_shapes_config, 1, "train", 0)
    b, _ = generate_image(tiny_shapes_config, 2, "train", 0)
    c, _ = generate_image(tiny_shapes_config, 1, "val", 0)
    assert not np.array_equal(a, b) and not np.array_equal(a, c)


def test_image_does_not_depend_on_split_size(tmp_path, tiny_shapes_config):
    write_dataset(tmp_path / "small", train=2, val=0, seed=5, cfg=tiny_shapes_config)
    write_dataset(tmp_path / "large", train=4, val=0, seed=5, cfg=tiny_shapes_config)
    for name in ("000000.png", "000001.png"):
        small, large = tmp_path / "small/train" / name, tmp_path / "large/train" / name
        assert small.read_bytes() == large.read_bytes()


@pytest.mark.parametrize("index", range(6))
def test_annotations_agree_with_masks_keypoints_and_occlusion_limit(index):
    cfg = ShapesConfig(image_size=96, max_shapes=5, min_radius=10, max_radius=30)
    image, instances = generate_image(cfg, 7, "train", index)
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    assert 1 <= len(instances) <= 5
    union = np.zeros((96, 96), dtype=int)
    for inst in instances:
        mask = inst["mask"]
        assert mask.sum() >= cfg.min_visible_pixels
        union += mask
        kps = inst["keypoints"]
        assert kps.shape == (len(KEYPOINT_NAMES), 3)
        labelled = kps[:, 2] > 0
        # left has the smallest x, right the largest; top the smallest y, bottom the largest.
        if labelled[0] and labelled[2]:
            assert kps[0, 0] <= kps[2, 0]
        if labelled[1] and labelled[3]:
            assert kps[1, 1] <= kps[3, 1]
        assert 0 <= inst["category"] < len(CATEGORIES)
    # Visible masks never overlap: each pixel belongs to at most one instance.
    assert union.max() <= 1


def test_written_json_is_coco_and_boxes_are_mask_extents(tiny_shapes):
    data = json.loads(tiny_shapes["train"].read_text())
    assert [c["name"] for c in data["categories"]] == list(CATEGORIES)
    assert len(data["images"]) == 6
    for ann in data["annotations"]:
        rle = dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode())
        mask = mask_utils.decode(rle)
        ys, xs = np.nonzero(mask)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
        assert ann["area"] == mask.sum()
        assert len(ann["keypoints"]) == 3 * len(KEYPOINT_NAMES)
        assert ann["num_keypoints"] == sum(v > 0 for v in ann["keypoints"][2::3])


def test_bad_generator_settings_raise(tiny_shapes_config):
    with pytest.raises(ValueError, match="max_shapes"):
        ShapesConfig(min_shapes=3, max_shapes=2)
    with pytest.raises(ValueError, match="split"):
        generate_image(tiny_shapes_config, 0, "test", 0)
    with pytest.raises(ValueError, match="train"):
        write_dataset("/nonexistent", train=-1, val=0)
