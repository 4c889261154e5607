"""The real models on the shapes set through the engine: a few iterations, then COCO evaluation."""

import math

import pytest

import maskzoo
from maskzoo.data.coco import CocoDataset
from maskzoo.data.transforms import default_train_transforms, flip_pairs_from_names
from maskzoo.engine.evaluate import evaluate
from maskzoo.engine.train import TrainConfig, train

SMALL = dict(
    min_size=64,
    max_size=64,
    rpn_pre_nms_top_n_train=100,
    rpn_post_nms_top_n_train=50,
    rpn_pre_nms_top_n_test=50,
    rpn_post_nms_top_n_test=20,
    box_batch_size_per_image=16,
    rpn_batch_size_per_image=32,
    box_score_thresh=0.0,
)


@pytest.mark.slow
def test_keypoint_rcnn_trains_and_evaluates_on_the_shapes_keypoints(tiny_shapes, tmp_path):
    ds = CocoDataset(tiny_shapes["train"], tiny_shapes["root"] / "train")
    assert flip_pairs_from_names(ds.keypoint_names) == ((0, 2),)  # left <-> right
    ds.transforms = default_train_transforms(flip_pairs_from_names(ds.keypoint_names))
    model = maskzoo.build(
        "keypoint_r18_fpn", num_classes=ds.num_classes, num_keypoints=ds.num_keypoints, **SMALL
    )
    cfg = TrainConfig(iters=2, batch_size=2, lr=0.001, warmup_iters=1, steps=(), checkpoint_period=2)
    summary = train(model, ds, cfg, tmp_path / "train", device="cpu", progress=False)
    assert math.isfinite(summary["final_loss"])
    val = CocoDataset(tiny_shapes["val"], tiny_shapes["root"] / "val", train=False)
    metrics = evaluate(model, val, device="cpu", out_dir=tmp_path / "eval", progress=False)
    assert set(metrics) == {"bbox", "keypoints"}
    assert all(0.0 <= v <= 1.0 or v == -1.0 for m in metrics.values() for v in m.values())
    assert (tmp_path / "eval" / "coco_results_keypoints.json").is_file()
