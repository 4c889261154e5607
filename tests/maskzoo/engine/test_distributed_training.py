import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from maskzoo.checkpoint.training import latest_checkpoint, load_training_checkpoint
from maskzoo.engine.distributed import IterationSampler, shard_indices

SCRIPT = Path(__file__).with_name("standin_train.py")
ROOT = Path(__file__).resolve().parents[3]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_processes_split_the_global_batch_of_one_process():
    single = IterationSampler(10, batch_size=4, seed=3)
    ranks = [IterationSampler(10, batch_size=2, seed=3, rank=r, world_size=2) for r in range(2)]
    for it in range(6):  # crosses epoch boundaries (10 is not a multiple of 4)
        assert single.batch(it) == ranks[0].batch(it) + ranks[1].batch(it)
    epoch0 = [i for it in range(2) for i, _ in single.batch(it)] + [i for i, _ in single.batch(2)[:2]]
    assert sorted(epoch0) == list(range(10))  # every image once per epoch


def test_evaluation_shards_cover_every_image_once():
    shards = [shard_indices(11, r, 3) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(11))


def test_bad_sampler_arguments_raise():
    with pytest.raises(ValueError, match="empty"):
        IterationSampler(0, 1, 0)
    with pytest.raises(ValueError, match="rank"):
        IterationSampler(5, 1, 0, rank=2, world_size=2)


@pytest.mark.slow
def test_two_cpu_processes_match_one_process_with_the_same_total_batch(tiny_shapes, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    data = [str(tiny_shapes["train"]), str(tiny_shapes["root"] / "train")]
    common = ["--iters", "4", "--period", "4"]
    single = subprocess.run(
        [sys.executable, str(SCRIPT), *data, str(tmp_path / "one"), "--batch", "2", *common],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--nnodes=1",
            f"--master_port={_free_port()}",
            str(SCRIPT),
            *data,
            str(tmp_path / "two"),
            "--batch",
            "1",
            *common,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = [json.loads(x) for x in (tmp_path / "one/metrics.jsonl").read_text().splitlines()]
    two = [json.loads(x) for x in (tmp_path / "two/metrics.jsonl").read_text().splitlines()]
    assert len(one) == len(two) == 4
    for a, b in zip(one, two):
        for key in ("loss", "loss_box", "loss_cls"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6)
    wa = load_training_checkpoint(latest_checkpoint(tmp_path / "one"))
    wb = load_training_checkpoint(latest_checkpoint(tmp_path / "two"))
    assert wb["world_size"] == 2 and len(wb["rng"]) == 2
    for k, v in wa["model"].items():
        torch.testing.assert_close(wb["model"][k], v, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_evaluation_sharded_over_two_processes_equals_one_process(tiny_shapes, tmp_path):
    from standin_eval import CentrePredictor

    from maskzoo.data.coco import CocoDataset
    from maskzoo.engine.evaluate import evaluate

    val = CocoDataset(tiny_shapes["val"], tiny_shapes["root"] / "val", train=False)
    single = evaluate(CentrePredictor(val), val, device="cpu", out_dir=tmp_path / "one", progress=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    script = Path(__file__).with_name("standin_eval.py")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--nnodes=1",
            f"--master_port={_free_port()}",
            str(script),
            str(tiny_shapes["val"]),
            str(tiny_shapes["root"] / "val"),
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "world_size.json").read_text()) == 2
    assert json.loads((tmp_path / "two" / "metrics.json").read_text()) == single
    one_results = json.loads((tmp_path / "one" / "coco_results_segm.json").read_text())
    two_results = json.loads((tmp_path / "two" / "coco_results_segm.json").read_text())
    key = lambda r: (r["image_id"], r["score"])  # noqa: E731
    assert sorted(one_results, key=key) == sorted(two_results, key=key)
    assert 0 < single["bbox"]["AP"] < 1  # a non-trivial score: the comparison is not 0 == 0
