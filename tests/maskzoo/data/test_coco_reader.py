import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from maskzoo.data.coco import CocoDataset, decode_segmentation, load_image


def _write(tmp_path, annotations, categories=None, images=None, image_size=(20, 30)):
    h, w = image_size
    (tmp_path / "img").mkdir(exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(tmp_path / "img" / "a.png")
    data = {
        "images": images or [{"id": 1, "file_name": "a.png", "width": w, "height": h}],
        "annotations": annotations,
        "categories": categories or [{"id": 5, "name": "cat"}, {"id": 9, "name": "dog"}],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


def _ann(id, **kw):
    ann = {
        "id": id,
        "image_id": 1,
        "category_id": 5,
        "bbox": [2, 3, 10, 5],
        "iscrowd": 0,
        "segmentation": [[2, 3, 12, 3, 12, 8, 2, 8]],
        "area": 50,
    }
    ann.update(kw)
    return ann


def test_shapes_set_reads_back_with_masks_matching_boxes(tiny_shapes):
    ds = CocoDataset(tiny_shapes["train"], tiny_shapes["root"] / "train")
    assert len(ds) == 6 and ds.num_classes == 4 and ds.num_keypoints == 4
    image, target = ds[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    n = len(target["labels"])
    assert target["masks"].shape == (n, 64, 64) and target["keypoints"].shape == (n, 4, 3)
    for box, mask in zip(target["boxes"], target["masks"]):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_polygon_and_rle_decode_to_the_same_mask():
    poly = [[2, 3, 12, 3, 12, 8, 2, 8]]
    from_poly = decode_segmentation(poly, 20, 30)
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(from_poly))
    compressed = {"size": [20, 30], "counts": rle["counts"].decode()}
    flat = from_poly.flatten(order="F")
    # Uncompressed RLE: run lengths starting with zeros.
    runs, current, count = [], 0, 0
    for v in flat:
        if v == current:
            count += 1
        else:
            runs.append(count)
            current, count = v, 1
    runs.append(count)
    uncompressed = {"size": [20, 30], "counts": runs}
    assert from_poly.sum() == 50
    np.testing.assert_array_equal(decode_segmentation(compressed, 20, 30), from_poly)
    np.testing.assert_array_equal(decode_segmentation(uncompressed, 20, 30), from_poly)


def test_labels_are_contiguous_in_category_id_order(tmp_path):
    path = _write(tmp_path, [_ann(1, category_id=9), _ann(2, category_id=5)])
    ds = CocoDataset(path, tmp_path / "img")
    _, target = ds[0]
    assert target["labels"].tolist() == [2, 1]
    assert ds.category_ids == [5, 9] and ds.class_names == ["__background__", "cat", "dog"]


def test_crowd_is_dropped_in_training_and_images_without_targets_skipped(tmp_path):
    path = _write(tmp_path, [_ann(1, iscrowd=1)])
    assert len(CocoDataset(path, tmp_path / "img", train=True)) == 0
    assert len(CocoDataset(path, tmp_path / "img", train=False)) == 1


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(segmentation=[]), "empty polygon"),
        (dict(segmentation=[[1, 2, 3, 4]]), "even number"),
        (dict(segmentation=[[1, 2, 3, 4, 5]]), "even number"),
        (dict(segmentation={"size": [5, 5], "counts": "abc"}), "differs from the image size"),
        (dict(bbox=[40, 3, 10, 5]), "outside its image"),
        (dict(bbox=[2, 3, 0, 5]), "no area"),
        (dict(bbox=[2, 3, float("nan"), 5]), "finite"),
        (dict(category_id=77), "category_id 77"),
        (dict(image_id=3), "image_id 3"),
    ],
)
def test_bad_annotation_is_skipped_with_warning_naming_file_and_id(tmp_path, bad, message):
    path = _write(tmp_path, [_ann(1), _ann(42, **bad)])
    with pytest.warns(UserWarning, match=message) as record:
        ds = CocoDataset(path, tmp_path / "img")
    text = str(record[0].message)
    assert "annotation id 42" in text and str(path) in text
    _, target = ds[0]
    assert len(target["labels"]) == 1


def test_box_partly_outside_its_image_is_clipped(tmp_path):
    path = _write(tmp_path, [_ann(1, bbox=[-4, 15, 10, 10])])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = CocoDataset(path, tmp_path / "img")
    _, target = ds[0]
    assert target["boxes"].tolist() == [[0.0, 15.0, 6.0, 20.0]]


def test_missing_or_malformed_annotation_file_raises_naming_it(tmp_path):
    (tmp_path / "img").mkdir()
    with pytest.raises(FileNotFoundError, match="nope.json"):
        CocoDataset(tmp_path / "nope.json", tmp_path / "img")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json.*not valid JSON"):
        CocoDataset(bad, tmp_path / "img")
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="lacks a 'annotations' list"):
        CocoDataset(bad, tmp_path / "img")


def test_undecodable_image_raises_naming_the_file(tmp_path):
    path = _write(tmp_path, [_ann(1)])
    (tmp_path / "img" / "a.png").write_bytes(b"this is not a png")
    ds = CocoDataset(path, tmp_path / "img")
    with pytest.raises(ValueError, match=r"cannot decode image .*a\.png"):
        ds[0]
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")
