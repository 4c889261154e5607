"""torchvision's checkpoint files, converted onto maskzoo's module tree.

Recognised layouts (detected from the keys and shapes, strictly: anything else is refused):

=========================  ==================================================  =================
torchvision file           what it is                                          maskzoo model
=========================  ==================================================  =================
maskrcnn_resnet50_fpn      ``MaskRCNN`` state_dict, ResNet-50 body             ``r50_fpn``
maskrcnn_resnet50_fpn_v2   the improved ``MaskRCNN``: batch norm in the body,   ``r50_fpn_v2``
                           FPN (``inner_blocks.<i>.1``) and heads, 2-conv RPN
                           head, 4-conv 1-FC box head
keypointrcnn_resnet50_fpn  ``KeypointRCNN`` state_dict, ResNet-50 body         ``keypoint_r50_fpn``
resnet_fpn_backbone        ``MaskRCNN`` on ``resnet_fpn_backbone("resnet101"`` ``r101_fpn``,
                           / ``"resnext101_32x8d")``                           ``x101_32x8d_fpn``
ImageNet classifier        ``resnet50()`` etc. state_dict (``conv1`` .. ``fc``) the backbone trunk
=========================  ==================================================  =================

Both torchvision key spellings are read: the current one (``rpn.head.conv.0.0.weight``,
``fpn.inner_blocks.0.0.weight``, ``mask_head.0.0.weight``) and the older one of the published
COCO files (``rpn.head.conv.weight``, ``fpn.inner_blocks.0.weight``, ``mask_head.mask_fcn1.weight``)
that torchvision itself upgrades on load.

Semantic surgery, each step logged (logger ``maskzoo.checkpoint``):

- frozen batch norm eps: torchvision's published COCO_V1 files for the two R50 detectors were
  trained when its FrozenBatchNorm2d had no eps, and its builders set eps = 0 after loading them
  (``overwrite_eps(model, 0.0)``). Files of those two layouts therefore load with
  ``frozen_bn_eps=0.0``; the R101/X101 resnet_fpn_backbone layouts (never published, trained with
  torchvision's default) and ImageNet files keep 1e-5. An explicit ``frozen_bn_eps=`` wins.
- ``num_batches_tracked`` buffers (from trainable BatchNorm2d) are dropped where the target norm
  is frozen; where the target trains its batch norms and the file has none, they start at 0.
- the ImageNet classifier's ``fc`` layer is dropped (the detector has no use for it).
- class layout: torchvision's detectors have background at index 0, like maskzoo, so class
  logits and class-specific box deltas / masks map row for row (no reordering).

Files are read with ``torch.load(weights_only=True)``: a checkpoint can never execute code.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from maskzoo.checkpoint.errors import CheckpointError
from maskzoo.checkpoint.finetune import with_num_classes
from maskzoo.checkpoint.fit import models_fitting, structure
from maskzoo.checkpoint.io import load_state_dict_strict, save
from maskzoo.checkpoint.rename import RenameRule, apply_rules
from maskzoo.checkpoint.torch_file import read_torch_file, state_dict_of
from maskzoo.config import apply_overrides
from maskzoo.modeling.build import build_model
from maskzoo.registry import config_of

log = logging.getLogger("maskzoo.checkpoint")

_BLOCKS_TO_DEPTH = {(2, 2, 2, 2): 18, (3, 4, 6, 3): (34, 50), (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}
_BN = r"(weight|bias|running_mean|running_var)"
_BN_ALL = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_WB = r"(weight|bias)"

# (kind, depth, groups, width_per_group) -> maskzoo registry name.
_MODEL_NAMES = {
    ("maskrcnn", 50, 1, 64): "r50_fpn",
    ("maskrcnn_v2", 50, 1, 64): "r50_fpn_v2",
    ("maskrcnn", 101, 1, 64): "r101_fpn",
    ("maskrcnn", 101, 32, 8): "x101_32x8d_fpn",
    ("maskrcnn", 18, 1, 64): "r18_fpn",
    ("keypointrcnn", 50, 1, 64): "keypoint_r50_fpn",
    ("keypointrcnn", 18, 1, 64): "keypoint_r18_fpn",
}


@dataclass(frozen=True)
class TorchvisionLayout:
    """What a torchvision file holds, as read from its keys and shapes."""

    kind: str  # "maskrcnn", "maskrcnn_v2" (batch norm in FPN and heads), "keypointrcnn" or "imagenet"
    depth: int  # ResNet depth of the body
    groups: int  # ResNeXt cardinality (1 for ResNet)
    width_per_group: int  # ResNeXt group width (64 for ResNet)
    num_classes: int | None  # detectors: classes including background
    num_keypoints: int | None  # keypoint detectors

    @property
    def description(self) -> str:
        arch = (
            f"resnext{self.depth}_{self.groups}x{self.width_per_group}d"
            if self.groups > 1
            else f"resnet{self.depth}"
        )
        if self.kind == "imagenet":
            return f"torchvision ImageNet {arch} classifier"
        if self.kind == "maskrcnn_v2":
            return f"torchvision maskrcnn_{arch}_fpn_v2 detector"
        return f"torchvision {self.kind}_{arch}_fpn detector"

    @property
    def model_name(self) -> str | None:
        """The maskzoo model this file fills, or None for ImageNet files (backbone only)."""
        return _MODEL_NAMES.get((self.kind, self.depth, self.groups, self.width_per_group))

    @property
    def frozen_bn_eps(self) -> float:
        """eps torchvision uses with this file (see the module docstring)."""
        # v2 files have trainable BatchNorm2d (eps 1e-5) throughout: the frozen eps plays no part.
        published = self.kind in ("maskrcnn", "keypointrcnn") and (self.depth, self.groups) == (50, 1)
        return 0.0 if published else 1e-5


# ---- reading ---------------------------------------------------------------------------------


def read_torchvision_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state_dict in a torchvision ``.pth`` file, read without executing any code.

    Raises FileNotFoundError / CheckpointError as :func:`~maskzoo.checkpoint.torch_file.read_torch_file`
    and :func:`~maskzoo.checkpoint.torch_file.state_dict_of`.
    """
    return state_dict_of(read_torch_file(path), f"checkpoint {os.fspath(path)!r}")


def _prefix_set(keys, depth: int) -> set[str]:
    return {".".join(k.split(".")[:depth]) for k in keys}


def _body_geometry(sd: Mapping[str, torch.Tensor], prefix: str, what: str) -> tuple[int, int, int]:
    """(depth, groups, width_per_group) of a torchvision ResNet body stored under ``prefix``."""
    blocks = []
    for layer in range(1, 5):
        found = {
            int(m.group(1)) for k in sd if (m := re.match(rf"{re.escape(prefix)}layer{layer}\.(\d+)\.", k))
        }
        if not found or found != set(range(len(found))):
            raise CheckpointError(
                f"{what}: ResNet stage layer{layer} is missing or has gaps in its block numbers"
            )
        blocks.append(len(found))
    depth = _BLOCKS_TO_DEPTH.get(tuple(blocks))
    if depth is None:
        raise CheckpointError(f"{what}: blocks per stage {blocks} match no ResNet depth (18/34/50/101/152)")
    bottleneck = f"{prefix}layer1.0.conv3.weight" in sd
    if isinstance(depth, tuple):  # ResNet-34 and -50 share the block counts; the block type decides
        depth = depth[1] if bottleneck else depth[0]
    if bottleneck != (depth >= 50):
        raise CheckpointError(f"{what}: block type does not match depth {depth}")
    conv2 = sd[f"{prefix}layer1.0.conv2.weight"]
    width = int(conv2.shape[0])
    groups = width // int(conv2.shape[1]) if bottleneck else 1
    width_per_group = width // groups if bottleneck else 64
    return depth, groups, width_per_group


def detect_layout(sd: Mapping[str, torch.Tensor], what: str = "checkpoint") -> TorchvisionLayout:
    """Recognises one of the layouts of the module docstring from the keys and shapes.

    Raises:
        CheckpointError: the keys are not exactly one of those layouts (the message says which
            top-level prefixes were found).
    """
    keys = list(sd)
    top = _prefix_set(keys, 1)
    if top <= {"backbone", "rpn", "roi_heads"} and {"backbone", "rpn", "roi_heads"} <= top:
        has_mask = any(k.startswith("roi_heads.mask_predictor.") for k in keys)
        has_keypoint = any(k.startswith("roi_heads.keypoint_predictor.") for k in keys)
        if has_mask == has_keypoint:
            branches = "both a mask and a keypoint" if has_mask else "neither a mask nor a keypoint"
            raise CheckpointError(
                f"{what}: a torchvision detector with {branches} branch; maskzoo reads maskrcnn_* and "
                "keypointrcnn_* files (a Faster R-CNN file has no mask branch)"
            )
        if not _prefix_set(keys, 2) <= {
            "backbone.body",
            "backbone.fpn",
            "rpn.head",
            "roi_heads.box_head",
            "roi_heads.box_predictor",
            "roi_heads.mask_head",
            "roi_heads.mask_predictor",
            "roi_heads.keypoint_head",
            "roi_heads.keypoint_predictor",
        }:
            raise CheckpointError(
                f"{what}: unexpected torchvision detector components {sorted(_prefix_set(keys, 2))}"
            )
        depth, groups, wpg = _body_geometry(sd, "backbone.body.", what)
        cls = sd.get("roi_heads.box_predictor.cls_score.weight")
        if cls is None:
            raise CheckpointError(f"{what}: no roi_heads.box_predictor.cls_score.weight")
        kps = sd.get("roi_heads.keypoint_predictor.kps_score_lowres.weight")
        # v2: the FPN convs carry a batch norm at index 1 of their Conv2dNormActivation.
        v2 = "backbone.fpn.inner_blocks.0.1.weight" in sd
        if v2 and has_keypoint:
            raise CheckpointError(f"{what}: a v2 (batch norm) keypoint detector; maskzoo has no such model")
        return TorchvisionLayout(
            "keypointrcnn" if has_keypoint else ("maskrcnn_v2" if v2 else "maskrcnn"),
            depth,
            groups,
            wpg,
            int(cls.shape[0]),
            None if kps is None else int(kps.shape[1]),
        )
    if top <= {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"} and {"conv1", "layer4"} <= top:
        depth, groups, wpg = _body_geometry(sd, "", what)
        return TorchvisionLayout("imagenet", depth, groups, wpg, None, None)
    raise CheckpointError(
        f"{what}: not a torchvision checkpoint maskzoo knows (top-level keys {sorted(top)[:10]}); expected a "
        "maskrcnn_*/keypointrcnn_* detector state_dict (backbone, rpn, roi_heads) or an ImageNet ResNet "
        "(conv1, bn1, layer1..4, fc)"
    )


# ---- rename rules, grouped per component -------------------------------------------------------


def _body_rules(src: str, dst: str, target_norm: str) -> list[RenameRule]:
    """torchvision ResNet (conv1/bn1/layerN/downsample) -> maskzoo ResNet (stem/resN/shortcut)."""
    rules = [
        RenameRule("backbone stem", rf"{src}conv1\.weight", rf"{dst}stem.conv.weight"),
        RenameRule("backbone stem", rf"{src}bn1\.{_BN}", rf"{dst}stem.norm.\1"),
    ]
    for layer in range(1, 5):
        stage = f"{dst}res{layer + 1}"
        rules += [
            RenameRule(
                f"backbone {stage[len(dst) :]}",
                rf"{src}layer{layer}\.(\d+)\.conv(\d)\.weight",
                rf"{stage}.\1.conv\2.weight",
            ),
            RenameRule(
                f"backbone {stage[len(dst) :]}",
                rf"{src}layer{layer}\.(\d+)\.bn(\d)\.{_BN}",
                rf"{stage}.\1.norm\2.\3",
            ),
            RenameRule(
                f"backbone {stage[len(dst) :]} shortcut",
                rf"{src}layer{layer}\.(\d+)\.downsample\.0\.weight",
                rf"{stage}.\1.shortcut.conv.weight",
            ),
            RenameRule(
                f"backbone {stage[len(dst) :]} shortcut",
                rf"{src}layer{layer}\.(\d+)\.downsample\.1\.{_BN}",
                rf"{stage}.\1.shortcut.norm.\2",
            ),
        ]
    # Counters of trainable BatchNorm2d: kept for a trainable target, dropped for a frozen one.
    counter_target = ""
    if target_norm == "bn":
        rules += (
            [
                RenameRule(
                    "backbone stem", rf"{src}bn1\.num_batches_tracked", rf"{dst}stem.norm.num_batches_tracked"
                ),
            ]
            + [
                RenameRule(
                    f"backbone res{layer + 1}",
                    rf"{src}layer{layer}\.(\d+)\.bn(\d)\.num_batches_tracked",
                    rf"{dst}res{layer + 1}.\1.norm\2.num_batches_tracked",
                )
                for layer in range(1, 5)
            ]
            + [
                RenameRule(
                    f"backbone res{layer + 1} shortcut",
                    rf"{src}layer{layer}\.(\d+)\.downsample\.1\.num_batches_tracked",
                    rf"{dst}res{layer + 1}.\1.shortcut.norm.num_batches_tracked",
                )
                for layer in range(1, 5)
            ]
        )
    else:
        rules.append(
            RenameRule(
                "batch norm counters (dropped: frozen norm)", rf"{src}.*num_batches_tracked", counter_target
            )
        )
    return rules


def _v2_rules(sd_keys) -> list[RenameRule]:
    """The parts of maskrcnn_resnet50_fpn_v2 that differ from v1: Conv2dNormActivation blocks
    (``<i>.0`` the bias-free conv, ``<i>.1`` its BatchNorm2d) in the FPN, box head and mask head,
    a two-conv RPN head, and the box head's FC after its four convs (nn.Sequential index 5)."""
    rules = []
    for src, dst in (("inner_blocks", "lateral"), ("layer_blocks", "output")):
        rules += [
            RenameRule(
                f"FPN {dst} (conv + BN)",
                rf"backbone\.fpn\.{src}\.(\d)\.0\.weight",
                rf"backbone.fpn.{dst}.\1.conv.weight",
            ),
            RenameRule(
                f"FPN {dst} (conv + BN)",
                rf"backbone\.fpn\.{src}\.(\d)\.1\.{_BN_ALL}",
                rf"backbone.fpn.{dst}.\1.norm.\2",
            ),
        ]
    rules += [
        RenameRule("RPN head", rf"rpn\.head\.conv\.0\.0\.{_WB}", r"rpn.head.conv.\1"),
        *[
            RenameRule("RPN head", rf"rpn\.head\.conv\.{i}\.0\.{_WB}", rf"rpn.head.extra_convs.{i - 1}.\1")
            for i in range(1, 4)
        ],
        RenameRule("RPN head", rf"rpn\.head\.cls_logits\.{_WB}", r"rpn.head.objectness.\1"),
        RenameRule("RPN head", rf"rpn\.head\.bbox_pred\.{_WB}", r"rpn.head.box_deltas.\1"),
    ]
    # nn.Sequential(conv-norm-relu x N, Flatten, Linear, ReLU): the FC's index is N + 1.
    num_convs = len(
        {k.split(".")[2] for k in sd_keys if re.fullmatch(r"roi_heads\.box_head\.\d+\.0\.weight", k)}
    )
    rules += [
        RenameRule(
            "box head (conv + BN)",
            r"roi_heads\.box_head\.(\d)\.0\.weight",
            r"roi_heads.box_head.convs.\1.conv.weight",
        ),
        RenameRule(
            "box head (conv + BN)",
            rf"roi_heads\.box_head\.(\d)\.1\.{_BN_ALL}",
            r"roi_heads.box_head.convs.\1.norm.\2",
        ),
        RenameRule(
            "box head FC", rf"roi_heads\.box_head\.{num_convs + 1}\.{_WB}", r"roi_heads.box_head.fcs.0.\1"
        ),
        RenameRule(
            "mask head (conv + BN)",
            r"roi_heads\.mask_head\.(\d)\.0\.weight",
            r"roi_heads.mask_head.convs.\1.conv.weight",
        ),
        RenameRule(
            "mask head (conv + BN)",
            rf"roi_heads\.mask_head\.(\d)\.1\.{_BN_ALL}",
            r"roi_heads.mask_head.convs.\1.norm.\2",
        ),
    ]
    return rules


def _detector_rules(layout: TorchvisionLayout, target_norm: str, sd_keys=()) -> list[RenameRule]:
    rules = _body_rules("backbone\\.body\\.", "backbone.body.", target_norm)
    if layout.kind == "maskrcnn_v2":
        return rules + _v2_rules(sd_keys) + _box_predictor_rules() + _mask_predictor_rules()
    rules += [
        # FPN: inner_blocks = lateral 1x1, layer_blocks = output 3x3; ".0" only in the newer spelling.
        RenameRule(
            "FPN lateral", rf"backbone\.fpn\.inner_blocks\.(\d)(?:\.0)?\.{_WB}", r"backbone.fpn.lateral.\1.\2"
        ),
        RenameRule(
            "FPN output", rf"backbone\.fpn\.layer_blocks\.(\d)(?:\.0)?\.{_WB}", r"backbone.fpn.output.\1.\2"
        ),
        RenameRule("RPN head", rf"rpn\.head\.conv(?:\.0\.0)?\.{_WB}", r"rpn.head.conv.\1"),
        RenameRule("RPN head", rf"rpn\.head\.cls_logits\.{_WB}", r"rpn.head.objectness.\1"),
        RenameRule("RPN head", rf"rpn\.head\.bbox_pred\.{_WB}", r"rpn.head.box_deltas.\1"),
        RenameRule("box head", rf"roi_heads\.box_head\.fc6\.{_WB}", r"roi_heads.box_head.fc1.\1"),
        RenameRule("box head", rf"roi_heads\.box_head\.fc7\.{_WB}", r"roi_heads.box_head.fc2.\1"),
        *_box_predictor_rules(),
    ]
    if layout.kind == "maskrcnn":
        rules += [
            RenameRule(
                "mask head", rf"roi_heads\.mask_head\.(\d)\.0\.{_WB}", r"roi_heads.mask_head.convs.\1.\2"
            ),
            # Older spelling: mask_fcn1..4 (1-based).
            *[
                RenameRule(
                    "mask head",
                    rf"roi_heads\.mask_head\.mask_fcn{i + 1}\.{_WB}",
                    rf"roi_heads.mask_head.convs.{i}.\1",
                )
                for i in range(8)
            ],
            *_mask_predictor_rules(),
        ]
    else:
        rules += [
            # nn.Sequential(conv, relu, conv, relu, ...): the convolutions sit at even indices.
            *[
                RenameRule(
                    "keypoint head",
                    rf"roi_heads\.keypoint_head\.{2 * i}\.{_WB}",
                    rf"roi_heads.keypoint_head.convs.{i}.\1",
                )
                for i in range(8)
            ],
            RenameRule(
                "keypoint predictor",
                rf"roi_heads\.keypoint_predictor\.kps_score_lowres\.{_WB}",
                r"roi_heads.keypoint_predictor.deconv.\1",
            ),
        ]
    return rules


def _box_predictor_rules() -> list[RenameRule]:
    return [
        RenameRule(
            "box predictor",
            rf"roi_heads\.box_predictor\.cls_score\.{_WB}",
            r"roi_heads.box_predictor.class_logits.\1",
        ),
        RenameRule(
            "box predictor",
            rf"roi_heads\.box_predictor\.bbox_pred\.{_WB}",
            r"roi_heads.box_predictor.box_deltas.\1",
        ),
    ]


def _mask_predictor_rules() -> list[RenameRule]:
    return [
        RenameRule(
            "mask predictor",
            rf"roi_heads\.mask_predictor\.conv5_mask\.{_WB}",
            r"roi_heads.mask_predictor.deconv.\1",
        ),
        RenameRule(
            "mask predictor",
            rf"roi_heads\.mask_predictor\.mask_fcn_logits\.{_WB}",
            r"roi_heads.mask_predictor.logits.\1",
        ),
    ]


def _imagenet_rules(target_norm: str) -> list[RenameRule]:
    return _body_rules("", "", target_norm) + [
        RenameRule("ImageNet classifier (dropped: not part of a detector)", rf"fc\.{_WB}", ""),
    ]


# ---- conversion ------------------------------------------------------------------------------


def _fill_counters(renamed: dict[str, torch.Tensor], target: Mapping[str, torch.Tensor], what: str) -> None:
    """Trainable-BN targets from frozen-BN files: the batch counters start at 0 (logged)."""
    missing = [k for k in target if k.endswith("num_batches_tracked") and k not in renamed]
    for k in missing:
        renamed[k] = torch.zeros_like(target[k])
    if missing:
        log.info(
            "%s: %d batch norm counters (num_batches_tracked) not in the file start at 0", what, len(missing)
        )


def _target_shapes(module: nn.Module, skip_counters: bool) -> dict[str, torch.Size]:
    return {
        k: v.shape
        for k, v in module.state_dict().items()
        if not (skip_counters and k.endswith("num_batches_tracked"))
    }


def convert_state_dict(
    sd: Mapping[str, torch.Tensor], model: nn.Module, what: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Renames a torchvision detector state_dict onto ``model``'s keys, strictly.

    Returns a state_dict that ``model.load_state_dict(..., strict=True)`` accepts. Raises
    CheckpointError listing every key that does not map (see :func:`maskzoo.checkpoint.rename.apply_rules`).
    """
    layout = detect_layout(sd, what)
    if layout.kind == "imagenet":
        raise CheckpointError(
            f"{what}: an ImageNet classifier fills a backbone, not a detector; use load_backbone"
        )
    norm = model.config.backbone.norm
    target = model.state_dict()
    # Batch norm counters of a trainable target are filled from the file when it has them (v2),
    # else they start at 0.
    skip_counters = norm == "bn" and not any(k.endswith("num_batches_tracked") for k in sd)
    renamed = apply_rules(
        sd, _detector_rules(layout, norm, list(sd)), _target_shapes(model, skip_counters=skip_counters), what
    )
    _fill_counters(renamed, target, what)
    dropped = (
        sum(k.endswith("num_batches_tracked") for k in sd if k.startswith("backbone.body."))
        if norm != "bn"
        else 0
    )
    if dropped:
        log.info(
            "%s: dropped %d batch norm counters (num_batches_tracked): the target's norms are frozen",
            what,
            dropped,
        )
    return renamed


def load_backbone(model: nn.Module, path: str | os.PathLike) -> None:
    """Fills ``model.backbone.body`` (the ResNet trunk) from a torchvision ImageNet classifier file.

    Everything else in ``model`` keeps its initialisation. The classifier's ``fc`` is dropped.

    Raises:
        CheckpointError: the file is not an ImageNet ResNet, or its depth/width does not match.
    """
    fill_backbone(model, read_torchvision_file(path), f"checkpoint {os.fspath(path)!r}")


def fill_backbone(model: nn.Module, sd: Mapping[str, torch.Tensor], what: str) -> None:
    """:func:`load_backbone` from a state_dict already read (``what`` names it in messages)."""
    layout = detect_layout(sd, what)
    if layout.kind != "imagenet":
        raise CheckpointError(f"{what}: a {layout.description}, not an ImageNet classifier")
    body = model.backbone.body
    norm = model.config.backbone.norm
    renamed = apply_rules(sd, _imagenet_rules(norm), _target_shapes(body, skip_counters=norm == "bn"), what)
    _fill_counters(renamed, body.state_dict(), what)
    load_state_dict_strict(body, renamed, what)
    log.info(
        "%s: %s loaded into the backbone trunk (fc dropped); the rest of the model keeps its initialisation",
        what,
        layout.description,
    )


def build_from_torchvision(path: str | os.PathLike, name: str | None = None, **overrides) -> nn.Module:
    """The maskzoo model a torchvision detector file describes, filled with its weights.

    Args:
        path: torchvision ``.pth`` file (maskrcnn_*/keypointrcnn_* state_dict).
        name: maskzoo registry name; default: the one the file's layout implies. A name whose
            architecture does not match the file raises.
        overrides: flat config knobs. ``num_classes`` / ``num_keypoints`` default to the file's;
            ``frozen_bn_eps`` to what torchvision uses with that file (see the module docstring).

    Raises:
        CheckpointError: unknown layout, a ``name`` that does not fit, or keys/shapes that do not map.
    """
    what = f"checkpoint {os.fspath(path)!r}"
    return model_from_state_dict(read_torchvision_file(path), what, name, **overrides)


def model_from_state_dict(
    sd: Mapping[str, torch.Tensor], what: str, name: str | None = None, **overrides
) -> nn.Module:
    """:func:`build_from_torchvision` of a state_dict already read (``what`` names it in messages)."""
    layout = detect_layout(sd, what)
    if layout.kind == "imagenet":
        if name is None:
            raise CheckpointError(f"{what}: an ImageNet classifier; name the detector to put its backbone in")
        model = build_model(apply_overrides(config_of(name), **overrides))
        fill_backbone(model, sd, what)
        return model
    implied = layout.model_name
    if name is None:
        if implied is None:
            raise CheckpointError(f"{what}: {layout.description} has no maskzoo model")
        name = implied
    num_classes = overrides.pop("num_classes", None)
    defaults = {"num_classes": layout.num_classes, "frozen_bn_eps": layout.frozen_bn_eps}
    if layout.num_keypoints is not None:
        defaults["num_keypoints"] = layout.num_keypoints
    config = apply_overrides(config_of(name), **{**defaults, **overrides})
    b = config.backbone
    if implied is None or structure(config) != structure(config_of(implied)):
        fitting = [] if implied is None else models_fitting(config_of(implied))
        raise CheckpointError(
            f"{what}: holds a {layout.description}, which fits maskzoo model(s) "
            f"{', '.join(repr(n) for n in fitting) or '(none)'}; it cannot fill model {name!r}"
        )
    log.info(
        "%s: %s -> maskzoo %r (num_classes=%d, frozen_bn_eps=%g%s)",
        what,
        layout.description,
        name,
        config.num_classes,
        b.frozen_bn_eps,
        "" if config.keypoint is None else f", num_keypoints={config.keypoint.num_keypoints}",
    )
    model = build_model(config)
    load_state_dict_strict(model, convert_state_dict(sd, model, what), what)
    return model if num_classes is None else with_num_classes(model, num_classes, what)


def convert_file(
    in_path: str | os.PathLike, out_path: str | os.PathLike, model_name: str | None = None
) -> str:
    """Converts a torchvision detector file into a maskzoo checkpoint (``maskzoo.load`` reads it).

    Returns the maskzoo model name written. Raises as :func:`build_from_torchvision`; the output
    is written atomically.
    """
    model = build_from_torchvision(in_path, model_name)
    save(model, out_path)
    return model.config.name
