"""The model zoo: one config per registered name (literal hyper-parameters, variants as diffs),
and :func:`build_model`, which writes the module tree a config describes."""

from __future__ import annotations

import dataclasses

import roiops
from maskzoo.config import (
    BackboneConfig,
    KeypointHeadConfig,
    MaskHeadConfig,
    ModelConfig,
    RPNConfig,
    TransformConfig,
)
from maskzoo.modeling.anchors import AnchorGenerator
from maskzoo.modeling.backbone import ResNet, init_backbone, make_stage, stage_channels
from maskzoo.modeling.box_head import BoxPredictor, FPNBoxHead, Res5BoxHead
from maskzoo.modeling.fpn import FPN, ResNetC4, ResNetFPN
from maskzoo.modeling.keypoint_head import KeypointHead, KeypointPredictor
from maskzoo.modeling.mask_head import FPNMaskHead, MaskPredictor
from maskzoo.modeling.rcnn import RCNN
from maskzoo.modeling.roi_heads import RoIHeads, SingleLevelPooler
from maskzoo.modeling.rpn import RPN, RPNHead
from maskzoo.modeling.transform import Transform
from maskzoo.registry import register

# ---- configs ---------------------------------------------------------------------------------


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


# ---- module trees ----------------------------------------------------------------------------


def build_model(config: ModelConfig) -> RCNN:
    """The randomly initialised model a config describes (FPN or C4 architecture)."""
    if config.architecture == "fpn":
        return _build_fpn(config)
    return _build_c4(config)


def _num_masks(config: ModelConfig) -> int:
    return 1 if config.mask.class_agnostic else config.num_classes


def _build_fpn(config: ModelConfig) -> RCNN:
    c = config.fpn_channels
    backbone = ResNetFPN(
        ResNet(config.backbone, last_stage="res5"), FPN(list(stage_channels(config.backbone.depth)), c)
    )
    anchors = AnchorGenerator(config.rpn.anchor_sizes, config.rpn.aspect_ratios)
    rpn = RPN(config.rpn, anchors, RPNHead(c, anchors.num_anchors_per_location()[0]))
    # Pooling on P2-P5 (P6 is for the RPN only), level by FPN eq. 1 with canonical 224 px at P4.
    levels = ["p2", "p3", "p4", "p5"]

    def pooler(head):
        return roiops.MultiScaleRoIAlign(levels, head.pool_size, head.sampling_ratio, aligned=head.aligned)

    box = config.box
    box_head = FPNBoxHead(c * box.pool_size**2, box.representation_size)
    heads = dict(
        box_pooler=pooler(box),
        box_head=box_head,
        box_predictor=BoxPredictor(box_head.out_features, config.num_classes),
    )
    if config.mask is not None:
        mask_head = FPNMaskHead(c, config.mask.conv_channels)
        heads.update(
            mask_pooler=pooler(config.mask),
            mask_head=mask_head,
            mask_predictor=MaskPredictor(
                mask_head.out_channels, config.mask.deconv_channels, _num_masks(config)
            ),
        )
    if config.keypoint is not None:
        kp = config.keypoint
        kp_head = KeypointHead(c, kp.conv_channels)
        heads.update(
            keypoint_pooler=pooler(kp),
            keypoint_head=kp_head,
            keypoint_predictor=KeypointPredictor(kp_head.out_channels, kp.num_keypoints, kp.upsample_factor),
        )
    return RCNN(config, Transform(config.transform), backbone, rpn, RoIHeads(config, **heads))


def _build_c4(config: ModelConfig) -> RCNN:
    if config.keypoint is not None:
        raise ValueError("C4 models have no keypoint branch; use an FPN model")
    body = ResNet(config.backbone, last_stage="res4")
    backbone = ResNetC4(body)
    anchors = AnchorGenerator(config.rpn.anchor_sizes, config.rpn.aspect_ratios)
    rpn = RPN(config.rpn, anchors, RPNHead(body.out_channels, anchors.num_anchors_per_location()[0]))
    depth_blocks = {18: 2, 34: 3, 50: 3, 101: 3, 152: 3}[config.backbone.depth]
    res5, res5_channels = make_stage(config.backbone, body.out_channels, 512, depth_blocks, stride=2)
    init_backbone(res5)
    if config.backbone.trainable_layers == 0:
        for p in res5.parameters():
            p.requires_grad_(False)
    box = config.box
    pooler = SingleLevelPooler("c4", box.pool_size, 1.0 / 16, box.sampling_ratio, box.aligned)
    box_head = Res5BoxHead(res5, res5_channels)
    heads = dict(
        box_pooler=pooler, box_head=box_head, box_predictor=BoxPredictor(res5_channels, config.num_classes)
    )
    if config.mask is not None:
        m = config.mask
        heads.update(
            mask_pooler=SingleLevelPooler("c4", m.pool_size, 1.0 / 16, m.sampling_ratio, m.aligned),
            mask_head=None,
            mask_predictor=MaskPredictor(res5_channels, m.deconv_channels, _num_masks(config)),
        )
    return RCNN(config, Transform(config.transform), backbone, rpn, RoIHeads(config, **heads))
