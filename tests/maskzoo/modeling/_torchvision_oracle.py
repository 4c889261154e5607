"""Test helpers: torchvision detection models built as torchvision builds them for its COCO
weights (frozen batch norm, eps 0, non-unit statistics), and their state_dict renamed onto maskzoo's
module tree (the table in maskzoo/modeling/__init__.py). torchvision is the oracle here only."""

import re

import torch

# Narrow heads for cheap tests: the structure of the paper's heads with fewer channels.
NARROW = dict(representation_size=256, mask_channels=(64, 64), keypoint_channels=(64, 64))


def narrow_config(name: str, **overrides):
    """maskzoo config of ``name`` with the NARROW heads (as :func:`tv_model` with ``narrow=True``)."""
    import dataclasses

    import maskzoo

    cfg = maskzoo.get_config(name, **overrides)
    changes = {"box": dataclasses.replace(cfg.box, representation_size=NARROW["representation_size"])}
    if cfg.mask is not None:
        changes["mask"] = dataclasses.replace(
            cfg.mask, conv_channels=NARROW["mask_channels"], deconv_channels=NARROW["mask_channels"][-1]
        )
    if cfg.keypoint is not None:
        changes["keypoint"] = dataclasses.replace(cfg.keypoint, conv_channels=NARROW["keypoint_channels"])
    return dataclasses.replace(cfg, **changes)


def tv_model(kind: str = "mask", depth: int = 18, num_classes: int = 91, narrow: bool = True, **kwargs):
    from torchvision.models import resnet
    from torchvision.models.detection import KeypointRCNN, MaskRCNN
    from torchvision.models.detection._utils import overwrite_eps
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import FrozenBatchNorm2d

    trunk = getattr(resnet, f"resnet{depth}")(weights=None, norm_layer=FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(trunk, 3)
    if narrow:
        rep = NARROW["representation_size"]
        kwargs.update(
            box_head=TwoMLPHead(256 * 7 * 7, rep), box_predictor=FastRCNNPredictor(rep, num_classes)
        )
        if kind == "mask":
            mc = NARROW["mask_channels"]
            kwargs.update(
                mask_head=MaskRCNNHeads(256, list(mc), 1),
                mask_predictor=MaskRCNNPredictor(mc[-1], mc[-1], num_classes),
            )
        else:
            kc = NARROW["keypoint_channels"]
            kwargs.update(
                keypoint_head=KeypointRCNNHeads(256, kc), keypoint_predictor=KeypointRCNNPredictor(kc[-1], 17)
            )
    # With custom predictors torchvision takes the class count from them (num_classes must be None).
    if kind == "mask":
        model = MaskRCNN(backbone, num_classes=None if narrow else num_classes, **kwargs)
    else:
        model = KeypointRCNN(backbone, num_classes=None if narrow else num_classes, **kwargs)
    overwrite_eps(model, 0.0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, FrozenBatchNorm2d):
                c = m.weight.shape[0]
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.2 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
    return model


_RULES = [
    (r"^backbone\.body\.conv1\.", "backbone.body.stem.conv."),
    (r"^backbone\.body\.bn1\.", "backbone.body.stem.norm."),
    (r"^backbone\.body\.layer(\d)\.(\d+)\.downsample\.0\.", None),
    (r"^backbone\.body\.layer(\d)\.(\d+)\.downsample\.1\.", None),
    (r"^backbone\.body\.layer(\d)\.(\d+)\.conv(\d)\.", None),
    (r"^backbone\.body\.layer(\d)\.(\d+)\.bn(\d)\.", None),
    (r"^backbone\.fpn\.inner_blocks\.(\d)\.0\.", r"backbone.fpn.lateral.\1."),
    (r"^backbone\.fpn\.layer_blocks\.(\d)\.0\.", r"backbone.fpn.output.\1."),
    (r"^rpn\.head\.conv\.0\.0\.", "rpn.head.conv."),
    (r"^rpn\.head\.cls_logits\.", "rpn.head.objectness."),
    (r"^rpn\.head\.bbox_pred\.", "rpn.head.box_deltas."),
    (r"^roi_heads\.box_head\.fc6\.", "roi_heads.box_head.fc1."),
    (r"^roi_heads\.box_head\.fc7\.", "roi_heads.box_head.fc2."),
    (r"^roi_heads\.box_predictor\.cls_score\.", "roi_heads.box_predictor.class_logits."),
    (r"^roi_heads\.box_predictor\.bbox_pred\.", "roi_heads.box_predictor.box_deltas."),
    (r"^roi_heads\.mask_head\.(\d)\.0\.", r"roi_heads.mask_head.convs.\1."),
    (r"^roi_heads\.mask_predictor\.conv5_mask\.", "roi_heads.mask_predictor.deconv."),
    (r"^roi_heads\.mask_predictor\.mask_fcn_logits\.", "roi_heads.mask_predictor.logits."),
    (r"^roi_heads\.keypoint_predictor\.kps_score_lowres\.", "roi_heads.keypoint_predictor.deconv."),
]


def _stage(k):
    return f"res{int(k) + 1}"


def rename(key: str) -> str:
    m = re.match(r"^backbone\.body\.layer(\d)\.(\d+)\.downsample\.([01])\.(.*)$", key)
    if m:
        part = "conv" if m.group(3) == "0" else "norm"
        return f"backbone.body.{_stage(m.group(1))}.{m.group(2)}.shortcut.{part}.{m.group(4)}"
    m = re.match(r"^backbone\.body\.layer(\d)\.(\d+)\.(conv|bn)(\d)\.(.*)$", key)
    if m:
        part = "conv" if m.group(3) == "conv" else "norm"
        return f"backbone.body.{_stage(m.group(1))}.{m.group(2)}.{part}{m.group(4)}.{m.group(5)}"
    m = re.match(r"^roi_heads\.keypoint_head\.(\d+)\.(.*)$", key)
    if m:
        return f"roi_heads.keypoint_head.convs.{int(m.group(1)) // 2}.{m.group(2)}"
    for pattern, repl in _RULES:
        if repl is not None and re.match(pattern, key):
            return re.sub(pattern, repl, key)
    raise KeyError(key)


def to_maskzoo_state_dict(tv_state: dict) -> dict:
    out = {rename(k): v for k, v in tv_state.items()}
    assert len(out) == len(tv_state), "rename collision"
    return out
