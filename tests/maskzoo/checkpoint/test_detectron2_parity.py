"""The acceptance test for Detectron2's model zoo: zoo-style ``.pkl`` files of Detectron2 models,
loaded with ``maskzoo.load``, reproduce the outputs Detectron2 itself gave on the same images.

The fixtures (``tests/maskzoo/fixtures/detectron2_*.{pkl,npz}``) were made by
``tests/maskzoo/fixtures/make_detectron2_fixtures.py`` with Detectron2 built from source (not
needed here): Mask R-CNN R50-FPN, R50-C4 and Keypoint R-CNN R50-FPN of the model zoo's configs at
reduced widths, random weights with realistic frozen batch norm statistics, run on two images
(256 x 320 and 320 x 256, which neither model resizes) with 50-100 detections each. Proposals,
boxes (1e-3 px), scores (1e-4), classes (maskzoo's labels are Detectron2's pred_classes + 1),
masks (IoU > 0.99 at Detectron2's 0.5 threshold) and keypoints (1e-2 px) must agree.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import maskzoo

FIXTURES = Path(__file__).parents[1] / "fixtures"
NAMES = ["r50_fpn", "r50_c4", "keypoint_r50_fpn"]


def _fixture(name):
    data = np.load(FIXTURES / f"detectron2_{name}.npz")
    return data, json.loads(str(data["meta"]))


def _d2_masks(data, i):
    shape = tuple(int(s) for s in data[f"masks_shape_{i}"])
    bits = np.unpackbits(data[f"masks_{i}"])[: int(np.prod(shape))]
    return torch.from_numpy(bits.reshape(shape).astype(bool))


def _mask_iou(a, b):
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))  # both empty: equal


@pytest.fixture(scope="module", params=NAMES)
def converted(request):
    name = request.param
    data, meta = _fixture(name)
    # min_size 256: the images' shorter side, so maskzoo does not resize them (Detectron2 did not).
    model = maskzoo.load(
        FIXTURES / f"detectron2_{name}.pkl", min_size=256, box_score_thresh=meta["score_thresh"]
    )
    return name, data, model.eval()


def test_fixtures_are_small():
    for path in FIXTURES.glob("detectron2_*"):
        assert path.stat().st_size < 700_000, path


def test_zoo_file_is_converted_with_detectron2_conventions(converted):
    name, data, model = converted
    c = model.config
    assert c.name == name and c.num_classes == (2 if "keypoint" in name else 81)
    assert (c.transform.channel_order, c.transform.pixel_scale) == ("BGR", 255.0)
    assert c.transform.image_mean == (103.530, 116.280, 123.675) and c.transform.image_std == (1.0, 1.0, 1.0)
    assert c.backbone.stride_in_1x1 and c.box.aligned and c.box.sampling_ratio == 0
    assert not c.rpn.round_anchors and c.rpn.anchor_strides == ((16,) if "c4" in name else (4, 8, 16, 32, 64))


def test_converted_model_reproduces_detectron2(converted, device):
    name, data, model = converted
    model = model.to(device)
    images = [torch.from_numpy(data[f"image_{i}"]).to(device) for i in range(2)]
    captured = []
    handle = model.rpn.register_forward_hook(lambda m, args, out: captured.append(out[0]))
    with torch.no_grad():
        outputs = model(images)
    handle.remove()
    for i, out in enumerate(outputs):
        out = {k: v.cpu() for k, v in out.items()}
        theirs = torch.from_numpy(data[f"proposals_{i}"])
        ours = captured[0][i].cpu()
        assert ours.shape == theirs.shape, f"image {i}: {ours.shape[0]} proposals vs {theirs.shape[0]}"
        torch.testing.assert_close(ours, theirs, atol=1e-3, rtol=0, msg=f"image {i} proposals")

        boxes = torch.from_numpy(data[f"boxes_{i}"])
        n = boxes.shape[0]
        assert 50 <= n <= 100, f"image {i}: {n} detections; the fixture must give 50-100"
        assert out["boxes"].shape[0] == n, (
            f"image {i}: {out['boxes'].shape[0]} detections vs Detectron2's {n}"
        )
        torch.testing.assert_close(out["boxes"], boxes, atol=1e-3, rtol=0, msg=f"image {i} boxes")
        torch.testing.assert_close(
            out["scores"], torch.from_numpy(data[f"scores_{i}"]), atol=1e-4, rtol=0, msg=f"image {i} scores"
        )
        assert torch.equal(out["labels"], torch.from_numpy(data[f"classes_{i}"]).long() + 1), (
            f"image {i} labels"
        )
        if f"masks_{i}" in data:
            theirs = _d2_masks(data, i)
            assert out["masks"].shape[-2:] == theirs.shape[-2:]
            iou = _mask_iou(out["masks"][:, 0] >= 0.5, theirs)
            assert iou.min() > 0.99, f"image {i}: worst mask IoU {iou.min():.4f}"
            assert theirs.flatten(1).any(1).float().mean() > 0.5, "masks should mostly be non-empty"
        if f"keypoints_{i}" in data:
            kp = torch.from_numpy(data[f"keypoints_{i}"])
            torch.testing.assert_close(out["keypoints"][..., :2], kp[..., :2], atol=1e-2, rtol=0)
            # Detectron2's third keypoint column is its (spatial softmax) score: maskzoo's keypoints_scores.
            torch.testing.assert_close(out["keypoints_scores"], kp[..., 2], atol=1e-4, rtol=0)
