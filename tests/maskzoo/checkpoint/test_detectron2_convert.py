"""Detectron2 files: the numpy-only unpickler refuses anything else, every published layout maps
key for key, files of another architecture are refused naming what they hold, fine-tuning."""

import dataclasses
import gzip
import json
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import maskzoo
from maskzoo.checkpoint import CheckpointError
from maskzoo.checkpoint import detectron2 as d2c
from maskzoo.checkpoint.pickle_file import read_pickle_file
from maskzoo.modeling.build import build_model

FIXTURES = Path(__file__).parents[1] / "fixtures"
LAYOUTS = json.load(gzip.open(FIXTURES / "detectron2_layouts.json.gz", "rt"))
EXPECTED_MODEL = {
    "mask_rcnn_R_50_C4_3x": "r50_c4",
    "mask_rcnn_R_101_C4_3x": "r101_c4",
    "mask_rcnn_R_50_FPN_3x": "r50_fpn",
    "mask_rcnn_R_101_FPN_3x": "r101_fpn",
    "mask_rcnn_X_101_32x8d_FPN_3x": "x101_32x8d_fpn",
    "keypoint_rcnn_R_50_FPN_3x": "keypoint_r50_fpn",
    "keypoint_rcnn_R_101_FPN_3x": "keypoint_r101_fpn",
    "keypoint_rcnn_X_101_32x8d_FPN_3x": "keypoint_x101_32x8d_fpn",
}


def _meta_state_dict(zoo_name):
    return {k: torch.empty(shape, device="meta") for k, shape in LAYOUTS[zoo_name].items()}


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_naming_the_global_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model_final.pkl"
    payload = {"model": {"conv.weight": np.zeros(3, np.float32), "x": _RunsCode(marker)}, "__author__": "x"}
    path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CheckpointError, match=r"global (posix|os|nt)\.system"):
        maskzoo.load(path)
    with pytest.raises(CheckpointError, match="system"):
        maskzoo.build("r50_fpn", checkpoint=path)
    assert not marker.exists()


@pytest.mark.parametrize("target", [("builtins", "eval"), ("subprocess", "Popen"), ("torch", "load")])
def test_any_global_but_numpy_arrays_is_refused(tmp_path, target):
    module, name = target
    path = tmp_path / "f.pkl"
    # A hand-written pickle: GLOBAL module name, an argument tuple, REDUCE.
    path.write_bytes(b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X\x01\x00\x00\x001\x85R.")
    with pytest.raises(CheckpointError, match=rf"global {module}\.{name}"):
        read_pickle_file(path)


def test_object_arrays_and_garbage_are_refused(tmp_path):
    path = tmp_path / "objects.pkl"
    path.write_bytes(pickle.dumps({"model": {"a": np.array([1, None], dtype=object)}}, protocol=2))
    with pytest.raises(CheckpointError, match="global|objects"):
        read_pickle_file(path)
    path.write_bytes(b"\x80\x02}q\x00(X\x05\x00")  # truncated
    with pytest.raises(CheckpointError, match="not a readable pickle"):
        read_pickle_file(path)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_arrays_of_every_pickle_protocol_are_read(tmp_path, protocol):
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, np.float64)}
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps({"model": arrays, "__author__": "Detectron2 Model Zoo"}, protocol=protocol))
    got = read_pickle_file(path)["model"]
    assert all(np.array_equal(got[k], v) for k, v in arrays.items())


@pytest.mark.parametrize("zoo_name", sorted(LAYOUTS))
def test_every_published_layout_maps_key_for_key(zoo_name):
    sd = _meta_state_dict(zoo_name)
    layout = d2c.detect_layout(sd, zoo_name)
    assert layout.model_name == EXPECTED_MODEL[zoo_name]
    config = d2c._described_config(layout, maskzoo.get_config(layout.model_name))
    assert config.num_classes == (2 if "keypoint" in zoo_name else 81)
    assert config.backbone.stride_in_1x1 == ("X_101" not in zoo_name)
    with torch.device("meta"):
        model = build_model(config)
        renamed = d2c.convert_state_dict(sd, model, zoo_name)
    assert renamed.keys() == model.state_dict().keys()


@pytest.mark.parametrize(
    "zoo_name, name, fits",
    [
        ("mask_rcnn_R_50_C4_3x", "r50_fpn", "'r50_c4'"),
        ("keypoint_rcnn_R_50_FPN_3x", "r50_fpn", "'keypoint_r50_fpn'"),
        ("mask_rcnn_R_50_FPN_3x", "keypoint_r50_fpn", "'r50_fpn'"),
        ("mask_rcnn_X_101_32x8d_FPN_3x", "r101_fpn", "'x101_32x8d_fpn'"),
    ],
)
def test_file_of_another_architecture_names_what_it_holds_and_fits(zoo_name, name, fits):
    obj = {"model": _meta_state_dict(zoo_name)}
    with pytest.raises(
        CheckpointError, match=rf"holds a Detectron2 .* fits maskzoo model\(s\) {fits}; .*{name}"
    ):
        d2c.model_from_checkpoint(obj, "file", name=name)


def test_detectron2_pth_loads_like_the_pkl(tmp_path):
    data = read_pickle_file(FIXTURES / "detectron2_r50_c4.pkl")
    path = tmp_path / "model_final.pth"
    torch.save({"model": {k: torch.from_numpy(v) for k, v in data["model"].items()}, "iteration": 9}, path)
    a = maskzoo.load(path).state_dict()
    b = maskzoo.load(FIXTURES / "detectron2_r50_c4.pkl").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fine_tuning_reinitialises_only_the_class_layers_and_says_which(caplog):
    path = FIXTURES / "detectron2_r50_fpn.pkl"
    full = maskzoo.load(path).state_dict()
    with caplog.at_level(logging.WARNING, logger="maskzoo.checkpoint"):
        model = maskzoo.load(path, num_classes=5)
    assert model.config.num_classes == 5
    message = "\n".join(r.getMessage() for r in caplog.records)
    for key in (
        "box_predictor.class_logits.weight",
        "box_predictor.box_deltas.bias",
        "mask_predictor.logits.weight",
    ):
        assert key in message
    ours = model.state_dict()
    changed = [k for k in ours if ours[k].shape != full[k].shape]
    assert changed and all(
        k.startswith(("roi_heads.box_predictor.", "roi_heads.mask_predictor.logits.")) for k in changed
    )
    assert all(torch.equal(ours[k], full[k]) for k in ours if k not in changed)


def test_cli_convert_writes_a_maskzoo_file_with_the_conventions(tmp_path, capsys):
    from maskzoo import cli

    out = tmp_path / "r50_c4.safetensors"
    assert cli.main(["convert", str(FIXTURES / "detectron2_r50_c4.pkl"), str(out)]) == 0
    assert "r50_c4" in capsys.readouterr().out
    model = maskzoo.load(out)
    assert model.config == maskzoo.load(FIXTURES / "detectron2_r50_c4.pkl").config
    assert model.config.transform.channel_order == "BGR" and model.config.mask.paste == "detectron2"


def test_cli_list_shows_the_published_files_each_model_loads(capsys):
    from maskzoo import cli

    assert cli.main(["list"]) == 0
    text = capsys.readouterr().out
    assert "model_final_f10217.pkl (COCO box 41.0 / mask 37.2 AP)" in text
    assert "maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth (COCO box 47.4 / mask 41.8 AP)" in text
    assert "model_final_a6e10b.pkl (COCO box 55.4 / keypoint 65.5 AP)" in text


def test_training_starts_from_a_detectron2_file_with_another_class_set():
    from types import SimpleNamespace

    from maskzoo.engine.pipeline import build_for_dataset

    path = FIXTURES / "detectron2_r50_fpn.pkl"
    # The fixture's reduced widths: the config a user would train has the file's architecture.
    config = dataclasses.replace(maskzoo.load(path).config, num_classes=4)
    model = build_for_dataset(config, SimpleNamespace(class_names=["a", "b", "c"]), seed=0, weights=path)
    assert model.config.num_classes == 4 and model.config.transform.channel_order == "BGR"
    images = [torch.rand(3, 64, 64)]
    targets = [
        {
            "boxes": torch.tensor([[4.0, 4.0, 40.0, 40.0]]),
            "labels": torch.tensor([2]),
            "masks": torch.zeros(1, 64, 64, dtype=torch.uint8),
        }
    ]
    losses = model.train()(images, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    with pytest.raises(CheckpointError, match="another architecture"):
        build_for_dataset(maskzoo.get_config("r50_c4"), SimpleNamespace(class_names=[]), seed=0, weights=path)
