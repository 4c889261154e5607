import dataclasses
import json

import pytest
from PIL import Image

import maskzoo
from maskzoo.demo import DemoConfig, demo_model_config, run_demo


def test_demo_model_is_r18_fpn_with_trainable_norms_and_the_demo_sizes():
    cfg = DemoConfig()
    model_cfg = demo_model_config(cfg, num_classes=4)
    assert cfg.model in maskzoo.list_models()  # registered: maskzoo list shows it
    assert model_cfg.backbone.depth == 18 and model_cfg.backbone.norm in ("bn", "gn")
    assert model_cfg.backbone.trainable_layers == 5  # from scratch: every stage trains
    assert model_cfg.transform.min_size == (cfg.image_size,)
    assert model_cfg.transform.max_size == cfg.image_size
    assert model_cfg.fpn_channels == 64 and model_cfg.num_classes == 4


@pytest.mark.slow
def test_demo_runs_every_stage_and_writes_table_picture_and_curve(tmp_path, capsys):
    cfg = dataclasses.replace(
        DemoConfig(),
        image_size=64,
        train_images=4,
        val_images=2,
        iters=2,
        batch_size=2,
        warmup_iters=1,
        picture_images=2,
        picture_score_thresh=0.0,
    )
    summary = run_demo(cfg, tmp_path, progress=False)
    assert set(summary["metrics"]) == {"bbox", "segm"}
    assert "segm" in capsys.readouterr().out
    with Image.open(tmp_path / "predictions.png") as im:
        assert im.size == (2 * 256, 256)  # two 64 px tiles drawn 4x larger
    assert (tmp_path / "train" / "loss_curve.png").is_file()
    assert (tmp_path / "train" / "model_final.safetensors").is_file()
    assert json.loads((tmp_path / "summary.json").read_text())["config"]["iters"] == 2
