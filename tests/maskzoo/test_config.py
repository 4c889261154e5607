"""Configs: overrides by torchvision's keyword names, rejection of unknown knobs and bad values,
the registry."""

import dataclasses

import pytest

import maskzoo
from maskzoo import registry
from maskzoo.config import OVERRIDES, ModelConfig

EXPECTED_MODELS = {
    "r50_fpn",
    "r101_fpn",
    "x101_32x8d_fpn",
    "r50_c4",
    "r101_c4",
    "keypoint_r50_fpn",
    "r18_fpn",
    "keypoint_r18_fpn",
}


def test_every_model_of_the_issue_is_registered():
    assert EXPECTED_MODELS <= set(maskzoo.list_models())
    assert maskzoo.list_models() == sorted(maskzoo.list_models())


def test_defaults_are_the_papers_and_torchvisions():
    cfg = maskzoo.get_config("r50_fpn")
    assert cfg.num_classes == 91
    assert (cfg.transform.min_size, cfg.transform.max_size) == ((800,), 1333)
    assert (cfg.rpn.fg_iou_thresh, cfg.rpn.bg_iou_thresh, cfg.rpn.nms_thresh) == (0.7, 0.3, 0.7)
    assert (cfg.rpn.batch_size_per_image, cfg.rpn.positive_fraction) == (256, 0.5)
    assert (cfg.box.batch_size_per_image, cfg.box.positive_fraction) == (512, 0.25)
    assert (cfg.box.score_thresh, cfg.box.nms_thresh, cfg.box.detections_per_img) == (0.05, 0.5, 100)
    assert cfg.mask.pool_size * 2 == 28 and not cfg.mask.class_agnostic
    kp = maskzoo.get_config("keypoint_r50_fpn")
    assert kp.mask is None and kp.keypoint.num_keypoints == 17 and kp.num_classes == 2
    assert kp.keypoint.pool_size * 4 == 56 and kp.keypoint.conv_channels == (512,) * 8
    x = maskzoo.get_config("x101_32x8d_fpn").backbone
    assert (x.depth, x.groups, x.width_per_group) == (101, 32, 8)


def test_overrides_use_torchvision_keyword_names():
    cfg = maskzoo.get_config(
        "r50_fpn",
        box_score_thresh=0.3,
        rpn_pre_nms_top_n_test=500,
        min_size=600,
        max_size=1000,
        num_classes=4,
        bbox_reg_weights=[1, 1, 1, 1],
        trainable_backbone_layers=5,
        mask_class_agnostic=True,
    )
    assert cfg.box.score_thresh == 0.3
    assert cfg.rpn.pre_nms_top_n_test == 500
    assert cfg.transform.min_size == (600,) and cfg.transform.max_size == 1000
    assert cfg.num_classes == 4 and cfg.box.bbox_reg_weights == (1, 1, 1, 1)
    assert cfg.backbone.trainable_layers == 5 and cfg.mask.class_agnostic
    # The default is untouched (configs are frozen values, not shared mutable state).
    assert maskzoo.get_config("r50_fpn").box.score_thresh == 0.05
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.num_classes = 3


def test_unknown_override_is_rejected_with_the_valid_names():
    with pytest.raises(TypeError, match="box_scor_thresh") as info:
        maskzoo.build("r18_fpn", box_scor_thresh=0.3)
    assert "box_score_thresh" in str(info.value) and "rpn_nms_thresh" in str(info.value)


def test_override_of_a_missing_branch_is_rejected():
    with pytest.raises(TypeError, match="keypoint"):
        maskzoo.get_config("r50_fpn", num_keypoints=5)


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("box_score_thresh", 1.5, "box_score_thresh"),
        ("rpn_nms_thresh", -0.1, "rpn_nms_thresh"),
        ("num_classes", 1, "num_classes"),
        ("trainable_backbone_layers", 6, "trainable_backbone_layers"),
        ("norm", "layer", "norm"),
        ("box_detections_per_img", 0, "box_detections_per_img"),
        ("min_size", 0, "min_size"),
    ],
)
def test_out_of_range_override_names_the_knob(key, value, match):
    with pytest.raises(ValueError, match=match):
        maskzoo.get_config("r50_fpn", **{key: value})


def test_unknown_model_name_lists_registered_ones():
    with pytest.raises(KeyError, match="r50_fpn"):
        maskzoo.build("r42_fpn")


def test_registry_rejects_a_duplicate_name():
    with pytest.raises(ValueError, match="already registered"):
        registry.register("r50_fpn")(lambda: maskzoo.get_config("r50_fpn"))
    assert registry.config_of("r50_fpn").name == "r50_fpn"


def test_every_override_name_maps_to_a_config_field():
    sections = {f.name for f in dataclasses.fields(ModelConfig)}
    cfg = maskzoo.get_config("keypoint_r50_fpn")
    for key, (section, name) in OVERRIDES.items():
        if section is None:
            assert name in sections, key
        else:
            owner = getattr(cfg, section) or getattr(maskzoo.get_config("r50_fpn"), section)
            assert name in {f.name for f in dataclasses.fields(owner)}, key


def test_describe_prints_every_threshold():
    text = maskzoo.describe("r50_fpn")
    for field in (
        "box.score_thresh = 0.05",
        "rpn.nms_thresh = 0.7",
        "transform.max_size = 1333",
        "box.detections_per_img = 100",
        "mask.class_agnostic = False",
    ):
        assert field in text
