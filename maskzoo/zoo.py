"""The model zoo: one config per registered name (literal hyper-parameters, variants as diffs of
their base), and the package's face over it: :func:`list_models`, :func:`get_config`,
:func:`describe`, :func:`build` and :func:`build_from_config`.

    import maskzoo
    model = maskzoo.build("r50_fpn")                       # random init, COCO's 91-class layout
    model = maskzoo.build("r50_fpn", num_classes=4, box_score_thresh=0.3)
    model = maskzoo.build("r50_fpn", checkpoint="maskrcnn_resnet50_fpn_coco.pth")
"""

from __future__ import annotations

import dataclasses
import os

from maskzoo.checkpoint.loader import load
from maskzoo.config import (
    BackboneConfig,
    KeypointHeadConfig,
    MaskHeadConfig,
    ModelConfig,
    RPNConfig,
    TransformConfig,
    apply_overrides,
)
from maskzoo.config import describe as describe_config
from maskzoo.modeling.build import build_model
from maskzoo.modeling.rcnn import RCNN
from maskzoo.registry import config_of, names, register

__all__ = ["build", "build_from_config", "describe", "get_config", "list_models"]

# ---- the face --------------------------------------------------------------------------------


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return names()


def get_config(name: str, **overrides) -> ModelConfig:
    """The config ``build(name, **overrides)`` would use.

    Raises KeyError for an unknown model name, TypeError for an unknown override (both list the
    valid names), ValueError for an out-of-range value.
    """
    return apply_overrides(config_of(name), **overrides)


def describe(name: str, **overrides) -> str:
    """Every hyper-parameter of a model, one ``section.field = value`` a line."""
    return describe_config(get_config(name, **overrides))


def build_from_config(config: ModelConfig) -> RCNN:
    """The randomly initialised model of a (possibly saved) config, on the CPU, in training mode."""
    return build_model(config)


def build(name: str, checkpoint: str | os.PathLike | None = None, **overrides) -> RCNN:
    """A model by registry name with flat config overrides (torchvision's keyword names:
    ``num_classes``, ``box_score_thresh``, ``min_size``, ...), optionally filled from ``checkpoint``.

    ``checkpoint`` (a path) may be a maskzoo file (``maskzoo.save``), a training state
    (``checkpoints/checkpoint_NNNNNNN.pt``), a torchvision detector file
    (``maskrcnn_resnet50_fpn``, ``keypointrcnn_resnet50_fpn``, R101/X101 resnet_fpn_backbone
    layouts; converted on load) or a torchvision ImageNet ResNet (fills the backbone trunk only);
    see :func:`maskzoo.checkpoint.loader.load`. Without it: random initialisation.

    Raises KeyError for an unknown model name, TypeError for an unknown override, ValueError for an
    out-of-range value, FileNotFoundError / maskzoo.checkpoint.CheckpointError for a checkpoint
    that is missing, unreadable or does not match (every missing/unexpected key and shape listed).
    """
    if checkpoint is None:
        return build_from_config(get_config(name, **overrides))
    return load(checkpoint, name=name, **overrides)


# ---- the registered models -------------------------------------------------------------------


@register("r50_fpn")
def r50_fpn() -> ModelConfig:
    """Mask R-CNN, ResNet-50-FPN: torchvision's maskrcnn_resnet50_fpn (37.9 box / 34.6 mask AP)."""
    return ModelConfig(
        name="r50_fpn",
        architecture="fpn",
        num_classes=91,
        fpn_channels=256,
        transform=TransformConfig(min_size=(800,), max_size=1333),
        backbone=BackboneConfig(depth=50, norm="frozen_bn", trainable_layers=3),
        rpn=RPNConfig(anchor_sizes=((32,), (64,), (128,), (256,), (512,)), aspect_ratios=(0.5, 1.0, 2.0)),
        mask=MaskHeadConfig(pool_size=14, conv_channels=(256, 256, 256, 256), deconv_channels=256),
    )


def _variant(base: ModelConfig, name: str, **backbone_changes) -> ModelConfig:
    return dataclasses.replace(
        base, name=name, backbone=dataclasses.replace(base.backbone, **backbone_changes)
    )


@register("r50_fpn_v2")
def r50_fpn_v2() -> ModelConfig:
    """Improved Mask R-CNN, ResNet-50-FPN: torchvision's maskrcnn_resnet50_fpn_v2 (47.4 box / 41.8
    mask AP): trainable batch norm in the backbone and the FPN, a two-conv RPN head, a four-conv
    (+ batch norm) one-FC box head and a mask head with batch norm. ``fuse_for_inference`` folds
    every batch norm into its convolution."""
    base = r50_fpn()
    return dataclasses.replace(
        base,
        name="r50_fpn_v2",
        fpn_norm="bn",
        backbone=dataclasses.replace(base.backbone, norm="bn", trainable_layers=3),
        rpn=dataclasses.replace(base.rpn, head_convs=2),
        box=dataclasses.replace(base.box, conv_channels=(256, 256, 256, 256), norm="bn", num_fc=1),
        mask=dataclasses.replace(base.mask, norm="bn"),
    )


@register("r101_fpn")
def r101_fpn() -> ModelConfig:
    return _variant(r50_fpn(), "r101_fpn", depth=101)


@register("x101_32x8d_fpn")
def x101_32x8d_fpn() -> ModelConfig:
    return _variant(r50_fpn(), "x101_32x8d_fpn", depth=101, groups=32, width_per_group=8)


@register("r18_fpn")
def r18_fpn() -> ModelConfig:
    """Small Mask R-CNN for CPU demos and tests: ResNet-18, trainable batch norm everywhere, 512 px."""
    base = _variant(r50_fpn(), "r18_fpn", depth=18, norm="bn", trainable_layers=5)
    return dataclasses.replace(base, transform=TransformConfig(min_size=(512,), max_size=853))


@register("r18_fpn_demo")
def r18_fpn_demo() -> ModelConfig:
    """r18_fpn narrowed for training from scratch on 2 CPU cores: the model of ``maskzoo demo``.

    Sized for the demo's shapes set (128 px images, objects 20-56 px, not resized): anchors halved
    (16-256 px instead of 32-512). On a 2-core CPU the default 256-channel heads at 512 RoIs per
    image cost several times the backbone, so the heads are narrowed (FPN 64 channels, a two-layer
    64-channel mask head, a 256-wide box head) and far fewer anchors / RoIs are sampled.
    """
    base = r18_fpn()
    return dataclasses.replace(
        base,
        name="r18_fpn_demo",
        fpn_channels=64,
        transform=dataclasses.replace(base.transform, min_size=(128,), max_size=128),
        rpn=dataclasses.replace(
            base.rpn,
            anchor_sizes=((16,), (32,), (64,), (128,), (256,)),
            pre_nms_top_n_train=600,
            post_nms_top_n_train=300,
            pre_nms_top_n_test=300,
            post_nms_top_n_test=100,
            batch_size_per_image=128,
        ),
        box=dataclasses.replace(
            base.box, representation_size=256, batch_size_per_image=64, detections_per_img=20
        ),
        mask=dataclasses.replace(base.mask, conv_channels=(64, 64), deconv_channels=64),
    )


@register("keypoint_r50_fpn")
def keypoint_r50_fpn() -> ModelConfig:
    """Keypoint R-CNN, ResNet-50-FPN: torchvision's keypointrcnn_resnet50_fpn (person + 17 keypoints)."""
    base = r50_fpn()
    return dataclasses.replace(
        base,
        name="keypoint_r50_fpn",
        num_classes=2,
        transform=TransformConfig(min_size=(640, 672, 704, 736, 768, 800), max_size=1333),
        mask=None,
        keypoint=KeypointHeadConfig(pool_size=14, conv_channels=(512,) * 8, num_keypoints=17),
    )


@register("keypoint_r101_fpn")
def keypoint_r101_fpn() -> ModelConfig:
    return _variant(keypoint_r50_fpn(), "keypoint_r101_fpn", depth=101)


@register("keypoint_x101_32x8d_fpn")
def keypoint_x101_32x8d_fpn() -> ModelConfig:
    return _variant(keypoint_r50_fpn(), "keypoint_x101_32x8d_fpn", depth=101, groups=32, width_per_group=8)


@register("keypoint_r18_fpn")
def keypoint_r18_fpn() -> ModelConfig:
    base = keypoint_r50_fpn()
    small = r18_fpn()
    return dataclasses.replace(
        base, name="keypoint_r18_fpn", backbone=small.backbone, transform=small.transform
    )


@register("r50_c4")
def r50_c4() -> ModelConfig:
    """Mask R-CNN, ResNet-50-C4 (paper Fig. 4 left): RPN on res4, res5 as the RoI head, 14x14 masks."""
    base = r50_fpn()
    return dataclasses.replace(
        base,
        name="r50_c4",
        architecture="c4",
        # One level with all five sizes (15 anchors per location); more candidates than per-level FPN.
        rpn=RPNConfig(
            anchor_sizes=((32, 64, 128, 256, 512),),
            aspect_ratios=(0.5, 1.0, 2.0),
            pre_nms_top_n_train=12000,
            pre_nms_top_n_test=6000,
            post_nms_top_n_train=2000,
            post_nms_top_n_test=1000,
        ),
        box=dataclasses.replace(base.box, pool_size=14, sampling_ratio=0),
        mask=MaskHeadConfig(pool_size=14, sampling_ratio=0, conv_channels=(), deconv_channels=256),
    )


@register("r101_c4")
def r101_c4() -> ModelConfig:
    return _variant(r50_c4(), "r101_c4", depth=101)
