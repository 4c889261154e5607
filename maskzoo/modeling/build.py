"""The module tree a :class:`~maskzoo.config.ModelConfig` describes: :func:`build_model`.

FPN models: ResNet -> FPN (P2-P6) -> RPN -> RoI heads pooling P2-P5 with multi-scale RoIAlign.
C4 models (paper Fig. 4 left): ResNet up to res4 -> RPN on res4 -> res5 as the shared RoI head.
The resulting state_dict names are documented in :mod:`maskzoo.modeling`.
"""

from __future__ import annotations

import roiops
from maskzoo.config import ModelConfig
from maskzoo.modeling.anchors import AnchorGenerator
from maskzoo.modeling.backbone import ResNet, init_backbone, make_stage, stage_channels
from maskzoo.modeling.box_head import BoxPredictor, ConvFCBoxHead, FPNBoxHead, Res5BoxHead
from maskzoo.modeling.fpn import FPN, ResNetC4, ResNetFPN
from maskzoo.modeling.keypoint_head import KeypointHead, KeypointPredictor
from maskzoo.modeling.mask_head import FPNMaskHead, MaskPredictor
from maskzoo.modeling.rcnn import RCNN
from maskzoo.modeling.roi_heads import RoIHeads, SingleLevelPooler
from maskzoo.modeling.rpn import RPN, RPNHead
from maskzoo.modeling.transform import Transform

__all__ = ["build_model"]


def build_model(config: ModelConfig) -> RCNN:
    """The randomly initialised model ``config`` describes (FPN or C4 architecture), on the CPU,
    in training mode. Raises ValueError for a C4 config with a keypoint branch."""
    if config.architecture == "fpn":
        return _build_fpn(config)
    return _build_c4(config)


def _anchors(config: ModelConfig) -> AnchorGenerator:
    r = config.rpn
    return AnchorGenerator(r.anchor_sizes, r.aspect_ratios, r.anchor_strides, r.round_anchors)


def _num_masks(config: ModelConfig) -> int:
    return 1 if config.mask.class_agnostic else config.num_classes


def _build_fpn(config: ModelConfig) -> RCNN:
    c = config.fpn_channels
    backbone = ResNetFPN(
        ResNet(config.backbone, last_stage="res5"),
        FPN(list(stage_channels(config.backbone.depth, config.backbone.res2_channels)), c, config.fpn_norm),
    )
    anchors = _anchors(config)
    rpn = RPN(config.rpn, anchors, RPNHead(c, anchors.num_anchors_per_location()[0], config.rpn.head_convs))
    # Pooling on P2-P5 (P6 is for the RPN only), level by FPN eq. 1 with canonical 224 px at P4.
    levels = ["p2", "p3", "p4", "p5"]

    def pooler(head):
        return roiops.MultiScaleRoIAlign(levels, head.pool_size, head.sampling_ratio, aligned=head.aligned)

    box = config.box
    if box.conv_channels or box.num_fc != 2:
        box_head = ConvFCBoxHead(
            c, box.pool_size, box.conv_channels, box.norm, box.representation_size, box.num_fc
        )
    else:  # the paper's "2fc" head, keys fc1 / fc2
        box_head = FPNBoxHead(c * box.pool_size**2, box.representation_size)
    heads = dict(
        box_pooler=pooler(box),
        box_head=box_head,
        box_predictor=BoxPredictor(box_head.out_features, config.num_classes),
    )
    if config.mask is not None:
        mask_head = FPNMaskHead(c, config.mask.conv_channels, config.mask.norm)
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
    anchors = _anchors(config)
    rpn = RPN(
        config.rpn,
        anchors,
        RPNHead(body.out_channels, anchors.num_anchors_per_location()[0], config.rpn.head_convs),
    )
    depth_blocks = {18: 2, 34: 3, 50: 3, 101: 3, 152: 3}[config.backbone.depth]
    res5_width = stage_channels(config.backbone.depth, config.backbone.res2_channels)[3]
    res5, res5_channels = make_stage(
        config.backbone, body.out_channels, 512, depth_blocks, stride=2, out_channels=res5_width
    )
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
