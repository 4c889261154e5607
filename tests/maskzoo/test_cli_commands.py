import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import maskzoo
from maskzoo import cli

ROOT = Path(__file__).resolve().parents[2]
TINY_MODEL = [
    "--set",
    "min_size=64",
    "--set",
    "max_size=64",
    "--set",
    "rpn_pre_nms_top_n_train=100",
    "--set",
    "rpn_post_nms_top_n_train=50",
    "--set",
    "rpn_pre_nms_top_n_test=50",
    "--set",
    "rpn_post_nms_top_n_test=20",
    "--set",
    "box_batch_size_per_image=16",
    "--set",
    "rpn_batch_size_per_image=32",
]


def test_module_entry_point_lists_every_model():
    out = subprocess.run(
        [sys.executable, "-m", "maskzoo", "list", "--names-only"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == maskzoo.list_models()
    assert "r18_fpn" in out.stdout


def test_list_prints_each_models_config(capsys):
    assert cli.main(["list"]) == 0
    text = capsys.readouterr().out
    for name in maskzoo.list_models():
        assert name in text
    assert "box.score_thresh" in text


def test_shapes_command_writes_the_data_set(tmp_path, capsys):
    args = ["shapes", str(tmp_path), "--train", "2", "--val", "1", "--size", "48", "--seed", "4"]
    assert cli.main(args) == 0
    data = json.loads((tmp_path / "train.json").read_text())
    assert len(data["images"]) == 2 and (tmp_path / "val" / "000000.png").is_file()
    with Image.open(tmp_path / "train" / "000001.png") as im:
        assert im.size == (48, 48)


def test_data_argument_resolves_folder_or_json(tiny_shapes, tmp_path):
    root = tiny_shapes["root"]
    assert cli.resolve_data(root, "val") == (root / "val.json", root / "val")
    assert cli.resolve_data(root / "train.json", "val") == (root / "train.json", root / "train")
    with pytest.raises(FileNotFoundError, match="annotation file"):
        cli.resolve_data(tmp_path, "train")


def test_errors_are_one_line_messages_not_tracebacks(tmp_path, capsys):
    missing = str(tmp_path / "none.safetensors")
    assert cli.main(["eval", "--checkpoint", missing, "--data", str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err
    assert cli.main(["convert", str(tmp_path / "missing.pth"), str(tmp_path / "out.safetensors")]) == 2
    assert "missing.pth" in capsys.readouterr().err



@pytest.mark.parametrize("dtype, policy", [("float32", "network"), ("bf16", "network"), ("bf16", "heads")])
def test_eval_dtype_puts_the_layers_in_that_dtype(tiny_shapes, tmp_path, monkeypatch, dtype, policy):
    from maskzoo.modeling.precision import FLOAT32_LAYERS

    ckpt = tmp_path / "model.safetensors"
    maskzoo.save(maskzoo.build("r18_fpn", num_classes=4), ckpt)
    seen = {}

    def spy(model, dataset, **kwargs):  # the model eval hands to the evaluation, then the real run
        seen["model"] = model
        return cli_evaluate(model, dataset, **kwargs)

    cli_evaluate = cli.evaluate
    monkeypatch.setattr(cli, "evaluate", spy)
    out = tmp_path / "ev"
    args = ["eval", "--checkpoint", str(ckpt), "--data", str(tiny_shapes["root"]), "--out", str(out),
            "--device", "cpu", "--quiet", "--dtype", dtype, "--precision-policy", policy, *TINY_MODEL]
    assert cli.main(args) == 0
    assert set(json.loads((out / "metrics.json").read_text())) >= {"bbox", "segm"}
    params = dict(seen["model"].named_parameters())
    low = torch.bfloat16 if dtype == "bf16" else torch.float32
    backbone = [p.dtype for name, p in params.items() if name.startswith("backbone.")]
    assert backbone and set(backbone) == {low if policy == "network" else torch.float32}
    mask_head = [p.dtype for name, p in params.items() if name.startswith("roi_heads.mask_head.")]
    assert mask_head and set(mask_head) == {low}
    kept = [p.dtype for name, p in params.items() if name.startswith(FLOAT32_LAYERS)]
    assert kept and set(kept) == {torch.float32}
    with pytest.raises(SystemExit):
        cli.main(["eval", "--checkpoint", str(ckpt), "--data", str(tiny_shapes["root"]), "--dtype", "int8"])


@pytest.mark.slow
def test_train_eval_predict_round_trip(tiny_shapes, tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "train",
        "--model",
        "r18_fpn",
        "--data",
        str(tiny_shapes["root"]),
        "--out",
        str(out),
        "--iters",
        "2",
        "--batch",
        "1",
        "--lr",
        "0.001",
        "--warmup",
        "1",
        "--checkpoint-period",
        "1",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--quiet",
        *TINY_MODEL,
    ]
    assert cli.main(args) == 0
    ckpt = out / "checkpoints" / "checkpoint_0000002.pt"
    assert ckpt.is_file() and (out / "metrics.jsonl").is_file() and (out / "loss_curve.png").is_file()
    model = maskzoo.load(ckpt)
    assert model.class_names == ["__background__", "circle", "square", "triangle"]
    assert (
        cli.main(
            [
                "eval",
                "--checkpoint",
                str(ckpt),
                "--data",
                str(tiny_shapes["root"]),
                "--out",
                str(tmp_path / "ev"),
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert set(metrics) >= {"bbox", "segm"}
    assert "AP50" in capsys.readouterr().out
    image = tiny_shapes["root"] / "val" / "000000.png"
    assert (
        cli.main(
            [
                "predict",
                str(image),
                "--checkpoint",
                str(ckpt),
                "--out",
                str(tmp_path / "pred"),
                "--score-thresh",
                "0.0",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    record = json.loads((tmp_path / "pred" / "000000.json").read_text())
    assert record["width"] == 64 and isinstance(record["detections"], list)
    for det in record["detections"]:
        assert len(det["box"]) == 4 and set(det["mask"]) == {"size", "counts"}
    assert (tmp_path / "pred" / "000000.png").is_file()
    assert cli.main(["predict", str(image), "--checkpoint", str(ckpt), "--out", str(tmp_path / "pred_bf16"),
                     "--score-thresh", "0.0", "--device", "cpu", "--dtype", "bf16"]) == 0
    assert isinstance(json.loads((tmp_path / "pred_bf16" / "000000.json").read_text())["detections"], list)
    from maskzoo.checkpoint import load

    reloaded = load(out / "model_final.safetensors")
    assert reloaded.class_names == model.class_names
    for k, v in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[k], v)


def test_predictions_json_holds_boxes_names_scores_and_rle():
    pred = {
        "boxes": torch.tensor([[1.0, 2.0, 5.0, 6.0]]),
        "labels": torch.tensor([2]),
        "scores": torch.tensor([0.75]),
        "masks": torch.zeros(1, 1, 8, 8),
    }
    pred["masks"][0, 0, 2:6, 1:5] = 1.0
    record = cli.predictions_to_json(pred, ["bg", "a", "b"], "x.png", (8, 8))
    det = record["detections"][0]
    assert det["class_name"] == "b" and det["score"] == 0.75 and det["box"] == [1.0, 2.0, 5.0, 6.0]
    from pycocotools import mask as mask_utils

    decoded = mask_utils.decode({"size": det["mask"]["size"], "counts": det["mask"]["counts"].encode()})
    assert decoded.sum() == 16
