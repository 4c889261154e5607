import contextlib
import io
import json

import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from maskzoo.data.coco import CocoDataset
from maskzoo.engine.evaluate import coco_evaluate, evaluate, format_table, prediction_to_coco_results


def _gt_predictions(dataset):
    """Per image, the ground truth as an eval-mode model output (masks as N x 1 x H x W probabilities)."""
    preds = []
    for i in range(len(dataset)):
        _, t = dataset[i]
        n = len(t["labels"])
        preds.append(
            {
                "boxes": t["boxes"],
                "labels": t["labels"],
                "scores": torch.linspace(1.0, 0.5, n),
                "masks": t["masks"][:, None].float(),
                "keypoints": t["keypoints"],
            }
        )
    return preds


class _Oracle(torch.nn.Module):
    """A 'model' that returns stored predictions in image order, for the evaluation loop."""

    def __init__(self, preds):
        super().__init__()
        self.preds = preds
        self.calls = 0
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, images):
        out = self.preds[self.calls : self.calls + len(images)]
        self.calls += len(images)
        return out


def test_perfect_predictions_give_ap_one(tiny_shapes, tmp_path):
    ds = CocoDataset(tiny_shapes["val"], tiny_shapes["root"] / "val", train=False)
    metrics = evaluate(_Oracle(_gt_predictions(ds)), ds, device="cpu", out_dir=tmp_path, progress=False)
    for iou_type in ("bbox", "segm", "keypoints"):
        assert metrics[iou_type]["AP"] == pytest.approx(1.0)
        assert metrics[iou_type]["AP50"] == pytest.approx(1.0)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written == metrics
    results = json.loads((tmp_path / "coco_results_segm.json").read_text())
    assert len(results) == sum(len(ds[i][1]["labels"]) for i in range(len(ds)))
    table = format_table(metrics)
    assert "segm" in table and "100.0" in table


def _pycocotools_alone(gt_path, dets, iou_type):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        ev = COCOeval(gt, gt.loadRes(dets), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("shift", [0.5, 2.0, 4.0])
def test_shifted_boxes_give_the_ap_pycocotools_gives(tiny_shapes, shift):
    ds = CocoDataset(tiny_shapes["val"], tiny_shapes["root"] / "val", train=False)
    dets = []
    for i, pred in enumerate(_gt_predictions(ds)):
        pred = {k: v for k, v in pred.items() if k in ("boxes", "labels", "scores")}
        pred["boxes"] = pred["boxes"] + torch.tensor([shift, -shift, shift, -shift])
        dets += prediction_to_coco_results(pred, ds.image_ids[i], ds.category_ids)["bbox"]
    ours = coco_evaluate(tiny_shapes["val"], {"bbox": dets})["bbox"]
    theirs = _pycocotools_alone(tiny_shapes["val"], dets, "bbox")
    names = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    assert [ours[k] for k in names] == pytest.approx(theirs[:6].tolist())
    assert ours["AP"] < 1.0


def test_box_at_iou_0_6_counts_for_ap50_but_not_ap75(tmp_path):
    # One 10 x 10 ground truth; a detection shifted by 2.5 px along x has IoU 75 / 125 = 0.6.
    gt = {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [20, 20, 10, 10],
                "area": 100,
                "iscrowd": 0,
                "segmentation": [[20, 20, 30, 20, 30, 30, 20, 30]],
            }
        ],
        "categories": [{"id": 1, "name": "box"}],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    det = [{"image_id": 1, "category_id": 1, "bbox": [22.5, 20, 10, 10], "score": 0.9}]
    m = coco_evaluate(path, {"bbox": det})["bbox"]
    assert m["AP50"] == pytest.approx(1.0) and m["AP75"] == pytest.approx(0.0)
    # AP averages the ten thresholds .50:.05:.95; IoU 0.6 passes .50, .55, .60 (3 of 10).
    assert m["AP"] == pytest.approx(0.3)


def test_prediction_label_outside_the_categories_raises():
    with pytest.raises(ValueError, match="out of range"):
        prediction_to_coco_results(
            {"boxes": torch.zeros(1, 4), "labels": torch.tensor([3]), "scores": torch.ones(1)}, 1, [1, 2]
        )


def test_empty_results_score_zero(tiny_shapes):
    m = coco_evaluate(tiny_shapes["val"], {"bbox": [], "segm": []})
    assert m["bbox"]["AP"] == 0.0 and m["segm"]["AP50"] == 0.0
