"""maskzoo.save / maskzoo.load: round trips, atomic writes, and clear errors for damaged files."""

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import maskzoo
from maskzoo.checkpoint import CheckpointError
from maskzoo.checkpoint import io as ckpt_io

# A small, fully built model; its state is randomised so that a round trip proves something.
SMALL = "r18_fpn"


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    model = maskzoo.build(
        SMALL, num_classes=5, box_score_thresh=0.2, box_detections_per_img=10, min_size=128, max_size=192
    )
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():  # small changes: every tensor differs from its init
                t.add_(0.01 * torch.randn_like(t))
    return model


@pytest.fixture(scope="module")
def saved(small_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "small.safetensors"
    maskzoo.save(small_model, path, class_names=["background", "circle", "square", "triangle", "star"])
    return path


def _rewrite_metadata(src, dst, **changes):
    with safe_open(src, framework="pt") as f:
        metadata = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    metadata.update(changes)
    for k in [k for k, v in metadata.items() if v is None]:
        del metadata[k]
    save_file(tensors, dst, metadata=metadata)


def test_round_trip_restores_config_weights_and_class_names(small_model, saved):
    loaded = maskzoo.load(saved)
    assert loaded.config == small_model.config
    assert loaded.config.box.score_thresh == 0.2 and loaded.config.num_classes == 5
    assert loaded.class_names == ["background", "circle", "square", "triangle", "star"]
    expected = small_model.state_dict()
    got = loaded.state_dict()
    assert expected.keys() == got.keys()
    for k in expected:
        assert torch.equal(expected[k], got[k]), k


def test_round_trip_gives_the_same_detections(small_model, saved):
    loaded = maskzoo.load(saved).eval()
    small_model.eval()
    image = torch.rand(3, 150, 170, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = small_model([image])[0], loaded([image])[0]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_file_metadata_is_self_describing(saved):
    header = ckpt_io.read_header(saved)
    assert header.config.name == SMALL
    assert header.overrides["num_classes"] == 5 and header.overrides["box_score_thresh"] == 0.2
    with safe_open(saved, framework="pt") as f:
        metadata = f.metadata()
    assert metadata["format"] == "maskzoo" and metadata["model"] == SMALL
    assert json.loads(metadata["config"])["box"]["score_thresh"] == 0.2


def test_build_with_a_maskzoo_checkpoint_applies_overrides_on_top(saved):
    model = maskzoo.build(SMALL, checkpoint=saved, box_score_thresh=0.5)
    assert model.config.box.score_thresh == 0.5 and model.config.num_classes == 5


def test_build_refuses_a_checkpoint_of_another_model(saved):
    with pytest.raises(CheckpointError, match="holds model 'r18_fpn', not 'r50_fpn'"):
        maskzoo.build("r50_fpn", checkpoint=saved)


def test_shape_changing_override_lists_every_mismatch(saved):
    with pytest.raises(CheckpointError) as info:
        maskzoo.load(saved, num_classes=7)
    message = str(info.value)
    assert "shape mismatch" in message
    assert "roi_heads.box_predictor.class_logits.weight: checkpoint (5, 1024) vs model (7, 1024)" in message


def test_save_refuses_a_module_that_is_not_a_maskzoo_model(tmp_path):
    with pytest.raises(ValueError, match="not a maskzoo model"):
        maskzoo.save(torch.nn.Linear(2, 2), tmp_path / "x.safetensors")


def test_save_refuses_class_names_of_the_wrong_length(small_model, tmp_path):
    with pytest.raises(ValueError, match="class_names"):
        maskzoo.save(small_model, tmp_path / "x.safetensors", class_names=["a", "b"])


def test_crash_during_save_leaves_the_old_file_intact(small_model, saved, tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    path.write_bytes(saved.read_bytes())
    before = path.read_bytes()

    def crash(*args):
        raise OSError("simulated crash: disk full")

    monkeypatch.setattr(ckpt_io.os, "fsync", crash)
    with pytest.raises(OSError, match="simulated crash"):
        maskzoo.save(small_model, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.safetensors"]  # no temporary file left behind


def test_save_replaces_an_existing_file(small_model, tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"old contents")
    maskzoo.save(small_model, path)
    assert maskzoo.load(path).config == small_model.config
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_truncated_file_is_reported(saved, tmp_path):
    path = tmp_path / "truncated.safetensors"
    data = saved.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.safetensors"):
        maskzoo.load(path)


def test_garbage_file_is_reported(tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        maskzoo.load(path)


def test_flipped_tensor_bytes_are_reported(saved, tmp_path):
    path = tmp_path / "flipped.safetensors"
    data = bytearray(saved.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted"):
        maskzoo.load(path)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
        maskzoo.load(tmp_path / "nothing.safetensors")


def test_missing_and_unexpected_tensors_are_listed(saved, tmp_path):
    with safe_open(saved, framework="pt") as f:
        metadata = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    del tensors["rpn.head.conv.weight"]
    tensors["rpn.head.extra.weight"] = torch.zeros(3)
    metadata["tensors_sha256"] = ckpt_io.tensors_digest(tensors)
    path = tmp_path / "tampered.safetensors"
    save_file(tensors, path, metadata=metadata)
    with pytest.raises(CheckpointError) as info:
        maskzoo.load(path)
    message = str(info.value)
    assert "1 missing key(s): rpn.head.conv.weight" in message
    assert "1 unexpected key(s): rpn.head.extra.weight" in message


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"format": None}, "not a maskzoo checkpoint"),
        ({"format_version": "99"}, "format version 99 is newer"),
        ({"format_version": "one"}, "format_version"),
        ({"model": "r7_fpn"}, "unknown model 'r7_fpn'"),
        ({"config": "{not json"}, "malformed maskzoo metadata"),
        ({"config": json.dumps({"name": SMALL, "colour": "red"})}, "unknown field"),
        ({"class_names": "[1, 2]"}, "class_names"),
    ],
)
def test_bad_metadata_is_reported(saved, tmp_path, changes, message):
    path = tmp_path / "bad.safetensors"
    _rewrite_metadata(saved, path, **changes)
    with pytest.raises(CheckpointError, match=message):
        maskzoo.load(path)
