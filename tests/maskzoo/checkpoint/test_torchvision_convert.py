"""Conversion of torchvision checkpoint files: layouts, strictness, surgery, and safe loading."""

import logging

import pytest
import torch
from _torchvision_models import coco_v1_like
from torchvision.models import resnet50
from torchvision.models.detection import fasterrcnn_resnet50_fpn, maskrcnn_resnet50_fpn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.mask_rcnn import MaskRCNN

import maskzoo
from maskzoo.checkpoint import CheckpointError
from maskzoo.checkpoint import torchvision as tvc
from maskzoo.checkpoint.rename import RenameRule, apply_rules


@pytest.fixture(scope="module")
def mask_file(tmp_path_factory):
    """A torchvision maskrcnn_resnet50_fpn file as published (frozen BN), with random weights."""
    torch.manual_seed(0)
    model = coco_v1_like("mask")
    with torch.no_grad():
        for t in model.state_dict().values():
            t.add_(0.01 * torch.randn_like(t))
    path = tmp_path_factory.mktemp("tv") / "maskrcnn_resnet50_fpn.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def mask_state(mask_file):
    return torch.load(mask_file, weights_only=True)


def _maskzoo_tensor(model, name):
    return model.state_dict()[name]


def test_maskrcnn_file_fills_every_parameter_and_buffer(mask_file, mask_state, caplog):
    with caplog.at_level(logging.INFO, logger="maskzoo.checkpoint"):
        model = maskzoo.build("r50_fpn", checkpoint=mask_file)
    assert "maskrcnn_resnet50_fpn" in caplog.text and "frozen_bn_eps=0" in caplog.text
    pairs = {
        "backbone.body.conv1.weight": "backbone.body.stem.conv.weight",
        "backbone.body.layer3.5.bn2.running_var": "backbone.body.res4.5.norm2.running_var",
        "backbone.body.layer2.0.downsample.1.running_mean": "backbone.body.res3.0.shortcut.norm.running_mean",
        "backbone.fpn.inner_blocks.3.0.weight": "backbone.fpn.lateral.3.weight",
        "backbone.fpn.layer_blocks.0.0.bias": "backbone.fpn.output.0.bias",
        "rpn.head.conv.0.0.weight": "rpn.head.conv.weight",
        "rpn.head.cls_logits.bias": "rpn.head.objectness.bias",
        "roi_heads.box_head.fc7.weight": "roi_heads.box_head.fc2.weight",
        "roi_heads.box_predictor.bbox_pred.weight": "roi_heads.box_predictor.box_deltas.weight",
        "roi_heads.mask_head.3.0.weight": "roi_heads.mask_head.convs.3.weight",
        "roi_heads.mask_predictor.mask_fcn_logits.weight": "roi_heads.mask_predictor.logits.weight",
    }
    for theirs, ours in pairs.items():
        assert torch.equal(mask_state[theirs], _maskzoo_tensor(model, ours)), (theirs, ours)
    # torchvision's builder sets eps = 0 after loading its COCO_V1 weights: so do we.
    assert model.config.backbone.frozen_bn_eps == 0.0
    assert all(m.eps == 0.0 for m in model.modules() if type(m).__name__ == "FrozenBatchNorm2d")


def test_published_key_spelling_converts_like_the_current_one(mask_state, tmp_path):
    legacy = {}
    for k, v in mask_state.items():
        k = k.replace("rpn.head.conv.0.0.", "rpn.head.conv.")
        for block in ("inner_blocks", "layer_blocks"):
            for i in range(4):
                k = k.replace(f"fpn.{block}.{i}.0.", f"fpn.{block}.{i}.")
        for i in range(4):
            k = k.replace(f"roi_heads.mask_head.{i}.0.", f"roi_heads.mask_head.mask_fcn{i + 1}.")
        legacy[k] = v
    assert legacy.keys() != mask_state.keys()
    path = tmp_path / "legacy.pth"
    torch.save(legacy, path)
    a = maskzoo.build("r50_fpn", checkpoint=path).state_dict()
    model = maskzoo.build("r50_fpn", frozen_bn_eps=0.0)
    b = tvc.convert_state_dict(mask_state, model)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unused_source_key_is_an_error(mask_state):
    model = maskzoo.build("r50_fpn")
    extra = dict(mask_state)
    extra["roi_heads.box_head.fc8.weight"] = torch.zeros(2)
    with pytest.raises(
        CheckpointError, match=r"1 source key\(s\) no rule maps: roi_heads.box_head.fc8.weight"
    ):
        tvc.convert_state_dict(extra, model)


def test_missing_source_key_is_an_error(mask_state):
    model = maskzoo.build("r50_fpn")
    partial = dict(mask_state)
    del partial["backbone.body.layer4.2.bn3.running_var"]
    with pytest.raises(
        CheckpointError, match=r"model key\(s\) left unfilled: backbone.body.res5.2.norm3.running_var"
    ):
        tvc.convert_state_dict(partial, model)


def test_wrong_shape_is_an_error_naming_both_keys(mask_state):
    model = maskzoo.build("r50_fpn")
    wrong = dict(mask_state)
    wrong["rpn.head.bbox_pred.weight"] = torch.zeros(8, 256, 1, 1)
    with pytest.raises(
        CheckpointError,
        match=r"rpn.head.bbox_pred.weight -> rpn.head.box_deltas.weight: "
        r"file \(8, 256, 1, 1\) vs model \(12, 256, 1, 1\)",
    ):
        tvc.convert_state_dict(wrong, model)


def test_a_checkpoint_never_runs_code(tmp_path):
    marker = tmp_path / "pwned"

    class Malicious:
        def __reduce__(self):
            import os

            return (os.mkdir, (str(marker),))

    path = tmp_path / "malicious.pth"
    torch.save({"backbone.body.conv1.weight": torch.zeros(1), "payload": Malicious()}, path)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        maskzoo.build("r50_fpn", checkpoint=path)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        tvc.convert_file(path, tmp_path / "out.safetensors")
    assert not marker.exists()


def test_number_of_classes_is_taken_from_the_file(tmp_path):
    with torch.device("meta"):
        tv = MaskRCNN(resnet_fpn_backbone(backbone_name="resnet50", weights=None), num_classes=4)
    layout = tvc.detect_layout(tv.state_dict())
    assert (layout.kind, layout.model_name, layout.num_classes) == ("maskrcnn", "r50_fpn", 4)


@pytest.mark.parametrize("arch, name", [("resnet101", "r101_fpn"), ("resnext101_32x8d", "x101_32x8d_fpn")])
def test_resnet_fpn_backbone_layouts_map_onto_the_deeper_models(arch, name):
    with torch.device("meta"):
        tv = MaskRCNN(resnet_fpn_backbone(backbone_name=arch, weights=None), num_classes=91)
        layout = tvc.detect_layout(tv.state_dict())
        assert layout.model_name == name
        # Never published by torchvision: trained with its default eps, not the COCO_V1 eps = 0.
        assert layout.frozen_bn_eps == 1e-5
        model = maskzoo.build(name)
        renamed = tvc.convert_state_dict(tv.state_dict(), model)
    assert renamed.keys() == model.state_dict().keys()


def test_trainable_batch_norm_counters_are_dropped_for_a_frozen_target():
    with torch.device("meta"):
        tv = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)  # BatchNorm2d: has counters
        sd = tv.state_dict()
        assert any(k.endswith("num_batches_tracked") for k in sd)
        model = maskzoo.build("r50_fpn")
        assert tvc.convert_state_dict(sd, model).keys() == model.state_dict().keys()


def test_file_of_another_architecture_is_refused(mask_file):
    with pytest.raises(CheckpointError, match="cannot fill model 'keypoint_r50_fpn'"):
        maskzoo.build("keypoint_r50_fpn", checkpoint=mask_file)
    with pytest.raises(CheckpointError, match="cannot fill model 'r101_fpn'"):
        maskzoo.build("r101_fpn", checkpoint=mask_file)


def test_faster_rcnn_file_is_refused():
    with torch.device("meta"):
        sd = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    with pytest.raises(CheckpointError, match="neither a mask nor a keypoint"):
        tvc.detect_layout(sd)


def test_unrelated_state_dict_is_refused():
    with pytest.raises(CheckpointError, match="not a torchvision checkpoint maskzoo knows"):
        tvc.detect_layout({"encoder.weight": torch.zeros(1)})


def test_imagenet_classifier_fills_the_backbone_only(tmp_path, caplog):
    torch.manual_seed(0)
    classifier = resnet50()
    path = tmp_path / "resnet50.pth"
    torch.save(classifier.state_dict(), path)
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO, logger="maskzoo.checkpoint"):
        model = maskzoo.build("r50_fpn", checkpoint=path)
    assert "fc dropped" in caplog.text
    assert model.config.backbone.frozen_bn_eps == 1e-5
    theirs = classifier.state_dict()
    ours = model.state_dict()
    assert torch.equal(ours["backbone.body.stem.conv.weight"], theirs["conv1.weight"])
    assert torch.equal(ours["backbone.body.res5.2.norm3.running_var"], theirs["layer4.2.bn3.running_var"])
    # Everything outside the trunk keeps the initialisation of a fresh build (same seed).
    torch.manual_seed(0)
    reference = maskzoo.build("r50_fpn").state_dict()
    for k in ours:
        if not k.startswith("backbone.body."):
            assert torch.equal(ours[k], reference[k]), k


def test_convert_file_writes_a_maskzoo_checkpoint(mask_file, tmp_path):
    out = tmp_path / "r50_fpn.safetensors"
    assert tvc.convert_file(mask_file, out) == "r50_fpn"
    converted = maskzoo.load(out)
    direct = maskzoo.build("r50_fpn", checkpoint=mask_file)
    assert converted.config == direct.config
    a, b = converted.state_dict(), direct.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_rules_reject_ambiguous_matches_and_collisions():
    source = {"a.weight": torch.zeros(1), "b.weight": torch.zeros(1)}
    shapes = {"x.weight": torch.Size([1])}
    with pytest.raises(CheckpointError, match=r"several rules map: a.weight \(one / two\)"):
        apply_rules(
            source,
            [
                RenameRule("one", r"a\.weight", "x.weight"),
                RenameRule("two", r"a\..*", "x.weight"),
                RenameRule("b", r"b\.weight", "y.weight"),
            ],
            shapes,
            "toy",
        )
    with pytest.raises(CheckpointError, match="collision.*a.weight and b.weight -> x.weight"):
        apply_rules(source, [RenameRule("ab", r"[ab]\.weight", "x.weight")], shapes, "toy")
