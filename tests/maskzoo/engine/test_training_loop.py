import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from standin_train import StandInDetector

from maskzoo.checkpoint.training import latest_checkpoint, load_training_checkpoint
from maskzoo.data.coco import CocoDataset
from maskzoo.engine.train import TrainConfig, draw_loss_curve, lr_factor, train

SCRIPT = Path(__file__).with_name("standin_train.py")
ROOT = Path(__file__).resolve().parents[3]


def _metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def _run(tiny_shapes, out, *extra):
    data = [str(tiny_shapes["train"]), str(tiny_shapes["root"] / "train")]
    cmd = [sys.executable, str(SCRIPT), *data, str(out), *extra]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=120)


def test_lr_warms_up_linearly_then_decays_in_steps():
    cfg = TrainConfig(iters=100, lr=0.1, warmup_iters=10, warmup_factor=0.1, steps=(50, 80), gamma=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(5, cfg) == pytest.approx(0.55)
    assert lr_factor(10, cfg) == 1.0 and lr_factor(49, cfg) == 1.0
    assert lr_factor(50, cfg) == pytest.approx(0.1) and lr_factor(80, cfg) == pytest.approx(0.01)


def test_bad_train_config_raises_naming_the_field():
    with pytest.raises(ValueError, match="iters"):
        TrainConfig(iters=0)
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=(10, 5))
    with pytest.raises(ValueError, match="clip_grad_norm"):
        TrainConfig(clip_grad_norm=-1.0)


def test_training_lowers_the_loss_and_writes_log_curve_and_checkpoints(tiny_shapes, tmp_path):
    ds = CocoDataset(tiny_shapes["train"], tiny_shapes["root"] / "train")
    torch.manual_seed(0)
    model = StandInDetector(ds.num_classes)
    cfg = TrainConfig(
        iters=30,
        batch_size=2,
        lr=0.05,
        warmup_iters=3,
        steps=(25,),
        checkpoint_period=10,
        clip_grad_norm=10.0,
    )
    summary = train(model, ds, cfg, tmp_path, device="cpu", progress=False)
    records = _metrics(tmp_path)
    assert [r["iteration"] for r in records] == list(range(1, 31))
    assert {"loss", "loss_box", "loss_cls", "lr", "time"} <= records[0].keys()
    assert sum(r["loss"] for r in records[-5:]) < sum(r["loss"] for r in records[:5])
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("checkpoint_*.pt"))
    assert names == ["checkpoint_0000010.pt", "checkpoint_0000020.pt", "checkpoint_0000030.pt"]
    assert latest_checkpoint(tmp_path).name == "checkpoint_0000030.pt" == Path(summary["checkpoint"]).name
    state = load_training_checkpoint(latest_checkpoint(tmp_path))
    assert state["iteration"] == 30
    for k, v in model.state_dict().items():
        assert torch.equal(state["model"][k], v)
    with Image.open(tmp_path / "loss_curve.png") as im:
        assert im.size == (800, 480)


def test_nan_loss_stops_naming_the_iteration_and_keeps_last_good_checkpoint(tiny_shapes, tmp_path):
    ds = CocoDataset(tiny_shapes["train"], tiny_shapes["root"] / "train")
    model = StandInDetector(ds.num_classes, nan_at_call=5)
    cfg = TrainConfig(iters=10, batch_size=1, lr=0.01, warmup_iters=1, steps=(), checkpoint_period=2)
    with pytest.raises(FloatingPointError, match=r"iteration 5 .*checkpoint_0000004\.pt"):
        train(model, ds, cfg, tmp_path, device="cpu", progress=False)
    state = load_training_checkpoint(latest_checkpoint(tmp_path))
    assert state["iteration"] == 4
    assert all(math.isfinite(v.abs().sum().item()) for v in state["model"].values())
    assert all(math.isfinite(v.abs().sum().item()) for v in model.state_dict().values())


def test_run_killed_and_resumed_gives_the_losses_of_an_uninterrupted_run(tiny_shapes, tmp_path):
    args = ["--iters", "7", "--period", "2", "--dropout", "0.3"]
    whole = _run(tiny_shapes, tmp_path / "whole", *args)
    assert whole.returncode == 0, whole.stderr
    killed = _run(tiny_shapes, tmp_path / "cut", *args, "--kill-at", "5")
    assert killed.returncode == -signal.SIGKILL
    # Killed after iteration 5; the newest checkpoint is iteration 4, so 5 is computed again.
    assert [r["iteration"] for r in _metrics(tmp_path / "cut")] == [1, 2, 3, 4, 5]
    assert latest_checkpoint(tmp_path / "cut").name == "checkpoint_0000004.pt"
    resumed = _run(tiny_shapes, tmp_path / "cut", *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    expected, got = _metrics(tmp_path / "whole"), _metrics(tmp_path / "cut")
    assert [r["iteration"] for r in got] == list(range(1, 8))
    for a, b in zip(expected, got):
        keys = ("loss", "loss_box", "loss_cls", "lr")
        assert [a[k] for k in keys] == [b[k] for k in keys]
    final_a = load_training_checkpoint(latest_checkpoint(tmp_path / "whole"))["model"]
    final_b = load_training_checkpoint(latest_checkpoint(tmp_path / "cut"))["model"]
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


def test_loss_curve_draws_with_few_or_no_points(tmp_path):
    draw_loss_curve([], tmp_path / "empty.png")
    draw_loss_curve([{"iteration": 1, "loss": 1.0, "loss_a": 0.5}], tmp_path / "one.png")
    assert (tmp_path / "empty.png").is_file() and (tmp_path / "one.png").is_file()
