"""Detectron2's model-zoo files, converted onto maskzoo's module tree, with Detectron2's conventions.

Recognised layouts (from the keys and shapes; anything else is refused):

==========================================  =====================================  ====================
Detectron2 model (``configs/...``)          keys                                   maskzoo model
==========================================  =====================================  ====================
Mask R-CNN R50/R101-C4                      ``backbone.res2..4``, ``roi_heads.res5``  ``r50_c4``, ``r101_c4``
Mask R-CNN R50/R101/X101-32x8d-FPN          ``backbone.bottom_up.*``, ``fpn_*``    ``r50_fpn``, ``r101_fpn``,
                                                                                   ``x101_32x8d_fpn``
Keypoint R-CNN R50/R101/X101-32x8d-FPN      ... ``roi_heads.keypoint_head.*``      ``keypoint_r50_fpn``, ...
==========================================  =====================================  ====================

Files: the zoo's ``.pkl`` (``{"model": {name: numpy array}, "__author__": ...}``, read by the
restricted unpickler of :mod:`maskzoo.checkpoint.pickle_file`) and Detectron2-trained ``.pth``
(``{"model": state_dict, ...}``, ``torch.load(weights_only=True)``).

A Detectron2 file implies Detectron2's inference conventions, and the converted model's config
carries them (:func:`detectron2_conventions`), so the user keeps passing RGB images in [0, 1]:

- input: BGR, 0-255, pixel mean (103.530, 116.280, 123.675) and std 1 (X101: (57.375, 57.120,
  58.395)); shorter side 800 (training 640-800), longer at most 1333. maskzoo resizes inside the
  model (bilinear on the float image); Detectron2 resizes outside it (on uint8 with PIL), so on
  images that need resizing the inputs differ by that resampling;
- backbone: frozen batch norm eps 1e-5, computed by ``F.batch_norm`` as Detectron2 does at
  inference (``frozen_bn_arithmetic``: the same values, Detectron2's rounding); the stride in
  the first 1x1 conv of a block for the MSRA
  R50/R101 weights (``STRIDE_IN_1X1``), in the 3x3 conv for X101;
- RPN: anchors exact (not rounded), offset 0, strides 4-64 (C4: 16); pre-NMS top-k per level 1000
  (C4: 6000), 1000 proposals after NMS 0.7, empty boxes dropped;
- RoI heads: ROIAlignV2 (``aligned=True``, adaptive sampling ``sampling_ratio=0``), box regression
  weights (10, 10, 5, 5) with the log(1000/16) clamp, score threshold 0.05, per-class NMS 0.5, 100
  detections, empty boxes dropped after mapping to the image; masks pasted by bilinear sampling
  at pixel centres (``MaskHeadConfig.paste="detectron2"``); keypoint scores by spatial softmax
  (``KeypointHeadConfig.decode="detectron2"``).

Known difference: the FPN level of a RoI is floor(4 + log2(sqrt(area) / 224 + 1e-8)) in Detectron2
and torchvision's floor(4 + log2(sqrt(area) / 224) + 1e-6) in roiops; they differ only for boxes
within ~1e-6 of a level boundary.

Semantic surgery, each step logged (logger ``maskzoo.checkpoint``):

- classes: Detectron2 puts the background last (K + 1 logits) and has K class-specific box
  regressors and masks; maskzoo puts it first. The class logits are rotated (background row to
  index 0), and zero box-regression rows and a zero mask channel are added for the background.
  maskzoo reports ``labels`` 1..K: label = Detectron2's ``pred_classes`` + 1 (0 is background),
  consistently with every other maskzoo model.
- C4 anchors: Detectron2 orders the 15 cell anchors size-major, maskzoo ratio-major; the RPN's
  objectness and delta rows are permuted to match.
- ``pixel_mean`` / ``pixel_std`` buffers and cached anchors in older files are dropped (they are
  the config's).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from maskzoo.checkpoint.errors import CheckpointError
from maskzoo.checkpoint.finetune import with_num_classes
from maskzoo.checkpoint.fit import models_fitting
from maskzoo.checkpoint.io import load_state_dict_strict
from maskzoo.checkpoint.rename import RenameRule, apply_rules
from maskzoo.config import ModelConfig, apply_overrides
from maskzoo.modeling.build import build_model
from maskzoo.registry import config_of

log = logging.getLogger("maskzoo.checkpoint")

__all__ = [
    "Detectron2Layout",
    "detect_layout",
    "detectron2_conventions",
    "is_detectron2_checkpoint",
    "model_from_checkpoint",
]

_BN = r"(weight|bias|running_mean|running_var)"
_WB = r"(weight|bias)"
_BLOCKS_TO_DEPTH = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}
PIXEL_MEAN = (103.530, 116.280, 123.675)
PIXEL_STD_MSRA = (1.0, 1.0, 1.0)
PIXEL_STD_FAIR_X101 = (57.375, 57.120, 58.395)
# Keys whose values are the config's, not weights.
_DERIVED = (r"pixel_mean", r"pixel_std", r"proposal_generator\.anchor_generator\.cell_anchors\.\d+")

# (architecture, kind, depth, groups, width_per_group) -> maskzoo registry name.
_MODEL_NAMES = {
    ("c4", "mask", 50, 1, 64): "r50_c4",
    ("c4", "mask", 101, 1, 64): "r101_c4",
    ("fpn", "mask", 50, 1, 64): "r50_fpn",
    ("fpn", "mask", 101, 1, 64): "r101_fpn",
    ("fpn", "mask", 101, 32, 8): "x101_32x8d_fpn",
    ("fpn", "keypoint", 50, 1, 64): "keypoint_r50_fpn",
    ("fpn", "keypoint", 101, 1, 64): "keypoint_r101_fpn",
    ("fpn", "keypoint", 101, 32, 8): "keypoint_x101_32x8d_fpn",
}


@dataclass(frozen=True)
class Detectron2Layout:
    """What a Detectron2 file holds, as read from its keys and shapes."""

    architecture: str  # "fpn" or "c4"
    kind: str  # "mask" or "keypoint"
    depth: int
    groups: int
    width_per_group: int
    stem_channels: int
    res2_channels: int  # 0 when it is the standard 64 x 4
    num_foreground: int  # Detectron2's NUM_CLASSES (background excluded)
    fpn_channels: int | None
    box_fc: int | None  # FPN box head FC width
    mask_convs: tuple[int, ...]
    mask_deconv: int | None
    keypoint_convs: tuple[int, ...]
    num_keypoints: int | None

    @property
    def description(self) -> str:
        arch = f"X{self.depth}-{self.groups}x{self.width_per_group}d" if self.groups > 1 else f"R{self.depth}"
        what = "Keypoint R-CNN" if self.kind == "keypoint" else "Mask R-CNN"
        widths = "" if (self.stem_channels, self.res2_channels) == (64, 0) else " (reduced widths)"
        return f"Detectron2 {what} {arch}-{self.architecture.upper()}{widths}"

    @property
    def model_name(self) -> str | None:
        # A plain ResNet (groups 1) of any width is a ResNet: its width is read from the file.
        wpg = self.width_per_group if self.groups > 1 else 64
        key = (self.architecture, self.kind, self.depth, self.groups, wpg)
        return _MODEL_NAMES.get(key)


# ---- reading ---------------------------------------------------------------------------------


def is_detectron2_checkpoint(obj: Any) -> bool:
    """True for a dict that holds (under "model", or itself) Detectron2 key names."""
    sd = obj.get("model", obj) if isinstance(obj, Mapping) else None
    return isinstance(sd, Mapping) and any(
        isinstance(k, str) and (k.startswith("backbone.bottom_up.") or k.startswith("roi_heads.res5."))
        for k in sd
    )


def _state_dict(obj: Any, what: str) -> dict[str, torch.Tensor]:
    sd = obj.get("model", obj) if isinstance(obj, Mapping) else None
    if not isinstance(sd, Mapping) or not sd:
        raise CheckpointError(f"{what}: holds no Detectron2 state_dict (a 'model' dict of name -> array)")
    out = {}
    for k, v in sd.items():
        if isinstance(v, np.ndarray):
            if v.dtype.kind not in "fiu":
                raise CheckpointError(f"{what}: {k} is a {v.dtype} array, not numbers")
            v = torch.from_numpy(np.ascontiguousarray(v))
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{what}: {k!r} is not a named array")
        out[k] = v.to(torch.float32) if v.is_floating_point() else v
    return out


def _blocks(sd, prefix: str) -> int:
    found = {int(m.group(1)) for k in sd if (m := re.match(rf"{re.escape(prefix)}(\d+)\.conv1\.weight$", k))}
    return len(found) if found == set(range(len(found))) else -1


def detect_layout(sd: Mapping[str, torch.Tensor], what: str = "checkpoint") -> Detectron2Layout:
    """Reads the architecture and widths of a Detectron2 state_dict (see the module table).

    Raises CheckpointError for anything else (a Faster R-CNN without a mask or keypoint head, a
    class-agnostic box regressor, norms other than frozen batch norm, a head with convolutions).
    """
    if any(k.startswith("backbone.bottom_up.") for k in sd):
        arch, body = "fpn", "backbone.bottom_up."
        stages = [_blocks(sd, f"{body}res{i}.") for i in (2, 3, 4, 5)]
    elif any(k.startswith("roi_heads.res5.") for k in sd):
        arch, body = "c4", "backbone."
        stages = [_blocks(sd, f"{body}res{i}.") for i in (2, 3, 4)] + [_blocks(sd, "roi_heads.res5.")]
    else:
        raise CheckpointError(
            f"{what}: not a Detectron2 R-CNN (no backbone.bottom_up.* nor roi_heads.res5.*)"
        )
    depth = _BLOCKS_TO_DEPTH.get(tuple(stages))
    if depth is None:
        raise CheckpointError(f"{what}: ResNet blocks per stage {stages} match no depth 50/101/152")
    has_mask = any(k.startswith("roi_heads.mask_head.") for k in sd)
    has_keypoint = any(k.startswith("roi_heads.keypoint_head.") for k in sd)
    if has_mask == has_keypoint:
        branches = "both a mask and a keypoint head" if has_mask else "neither a mask nor a keypoint head"
        raise CheckpointError(
            f"{what}: a Detectron2 model with {branches}; maskzoo reads Mask and Keypoint R-CNN"
        )
    if any(".norm." in k and k.endswith("num_batches_tracked") for k in sd) or any(
        re.search(r"\.(box_head|mask_head|keypoint_head)\..*norm", k) for k in sd
    ):
        raise CheckpointError(f"{what}: trainable (SyncBN/GN) norms; maskzoo reads the frozen-BN zoo models")
    conv2 = sd[f"{body}res2.0.conv2.weight"]
    width = int(conv2.shape[0])
    groups = width // int(conv2.shape[1])
    cls = sd.get("roi_heads.box_predictor.cls_score.weight")
    reg = sd.get("roi_heads.box_predictor.bbox_pred.weight")
    if cls is None or reg is None:
        raise CheckpointError(f"{what}: no roi_heads.box_predictor.cls_score / bbox_pred")
    k = int(cls.shape[0]) - 1
    if int(reg.shape[0]) != 4 * k:
        raise CheckpointError(
            f"{what}: a class-agnostic box regressor ({reg.shape[0]} rows); maskzoo's is per class"
        )
    if any(re.match(r"roi_heads\.box_head\.conv", key) for key in sd):
        raise CheckpointError(f"{what}: a box head with convolutions; maskzoo reads the zoo's 2-FC heads")
    res2 = int(sd[f"{body}res2.0.conv3.weight"].shape[0])
    mask_convs, keypoint_convs = [], []
    i = 1
    while f"roi_heads.mask_head.mask_fcn{i}.weight" in sd:
        mask_convs.append(int(sd[f"roi_heads.mask_head.mask_fcn{i}.weight"].shape[0]))
        i += 1
    i = 1
    while f"roi_heads.keypoint_head.conv_fcn{i}.weight" in sd:
        keypoint_convs.append(int(sd[f"roi_heads.keypoint_head.conv_fcn{i}.weight"].shape[0]))
        i += 1
    deconv = sd.get("roi_heads.mask_head.deconv.weight")
    kps = sd.get("roi_heads.keypoint_head.score_lowres.weight")
    fc1 = sd.get("roi_heads.box_head.fc1.weight")
    lateral = sd.get("backbone.fpn_lateral2.weight")
    return Detectron2Layout(
        architecture=arch,
        kind="keypoint" if has_keypoint else "mask",
        depth=depth,
        groups=groups,
        width_per_group=width // groups,
        stem_channels=int(sd[f"{body}stem.conv1.weight"].shape[0]),
        res2_channels=0 if res2 == 256 else res2,
        num_foreground=k,
        fpn_channels=None if lateral is None else int(lateral.shape[0]),
        box_fc=None if fc1 is None else int(fc1.shape[0]),
        mask_convs=tuple(mask_convs),
        mask_deconv=None if deconv is None else int(deconv.shape[1]),
        keypoint_convs=tuple(keypoint_convs),
        num_keypoints=None if kps is None else int(kps.shape[1]),
    )


# ---- conventions -----------------------------------------------------------------------------


def detectron2_conventions(config: ModelConfig, fair_x101: bool = False) -> ModelConfig:
    """``config`` with Detectron2's inference (and training-schedule) conventions, see the module doc.

    ``fair_x101``: the FAIR ResNeXt weights (pixel std of ImageNet in 0-255 units, stride in the
    3x3 conv) instead of the MSRA ResNets (std 1, stride in the first 1x1 conv).
    """
    c4 = config.architecture == "c4"
    t = dataclasses.replace(
        config.transform,
        min_size=(640, 672, 704, 736, 768, 800),  # INPUT.MIN_SIZE_TRAIN; inference uses the last (800)
        max_size=1333,
        channel_order="BGR",
        pixel_scale=255.0,
        image_mean=PIXEL_MEAN,
        image_std=PIXEL_STD_FAIR_X101 if fair_x101 else PIXEL_STD_MSRA,
        size_divisible=32,
    )
    b = dataclasses.replace(
        config.backbone,
        norm="frozen_bn",
        frozen_bn_eps=1e-5,
        frozen_bn_arithmetic="batch_norm",
        stride_in_1x1=not fair_x101,
    )
    r = dataclasses.replace(
        config.rpn,
        anchor_strides=(16,) if c4 else (4, 8, 16, 32, 64),
        round_anchors=False,
        rank_by_logit=True,
        pre_nms_top_n_train=12000 if c4 else 2000,
        pre_nms_top_n_test=6000 if c4 else 1000,
        post_nms_top_n_train=2000 if c4 else (1500 if config.keypoint is not None else 1000),
        post_nms_top_n_test=1000,
        nms_thresh=0.7,
        score_thresh=0.0,
        min_box_size=0.0,
        min_box_size_strict=True,
    )
    box = dataclasses.replace(
        config.box,
        aligned=True,
        sampling_ratio=0,
        pool_size=14 if c4 else 7,
        bbox_reg_weights=(10.0, 10.0, 5.0, 5.0),
        score_thresh=0.05,
        nms_thresh=0.5,
        detections_per_img=100,
        min_box_size=0.0,
        drop_empty=True,
    )
    mask = config.mask and dataclasses.replace(
        config.mask, aligned=True, sampling_ratio=0, pool_size=14, paste="detectron2"
    )
    keypoint = config.keypoint and dataclasses.replace(
        config.keypoint, aligned=True, sampling_ratio=0, pool_size=14, decode="detectron2"
    )
    return dataclasses.replace(config, transform=t, backbone=b, rpn=r, box=box, mask=mask, keypoint=keypoint)


def _described_config(layout: Detectron2Layout, base: ModelConfig) -> ModelConfig:
    """``base`` with the file's widths and class counts, and Detectron2's conventions."""
    b = dataclasses.replace(
        base.backbone,
        depth=layout.depth,
        groups=layout.groups,
        width_per_group=layout.width_per_group,
        stem_channels=layout.stem_channels,
        res2_channels=layout.res2_channels,
    )
    changes: dict[str, Any] = dict(backbone=b, num_classes=layout.num_foreground + 1)
    if layout.fpn_channels is not None:
        changes["fpn_channels"] = layout.fpn_channels
    if layout.box_fc is not None:
        changes["box"] = dataclasses.replace(base.box, representation_size=layout.box_fc)
    if base.mask is not None and layout.mask_deconv is not None:
        changes["mask"] = dataclasses.replace(
            base.mask, conv_channels=layout.mask_convs, deconv_channels=layout.mask_deconv
        )
    if base.keypoint is not None and layout.num_keypoints is not None:
        changes["keypoint"] = dataclasses.replace(
            base.keypoint, conv_channels=layout.keypoint_convs, num_keypoints=layout.num_keypoints
        )
    return detectron2_conventions(dataclasses.replace(base, **changes), fair_x101=layout.groups > 1)


# ---- rename rules, grouped per component -------------------------------------------------------


def _body_rules(src: str, dst: str, stages: str, component: str) -> list[RenameRule]:
    """Detectron2 ResNet blocks (convN + convN.norm, shortcut + shortcut.norm) -> maskzoo's."""
    return [
        RenameRule(
            component, rf"{src}res([{stages}])\.(\d+)\.conv([123])\.weight", rf"{dst}res\1.\2.conv\3.weight"
        ),
        RenameRule(
            component, rf"{src}res([{stages}])\.(\d+)\.conv([123])\.norm\.{_BN}", rf"{dst}res\1.\2.norm\3.\4"
        ),
        RenameRule(
            f"{component} shortcut",
            rf"{src}res([{stages}])\.(\d+)\.shortcut\.weight",
            rf"{dst}res\1.\2.shortcut.conv.weight",
        ),
        RenameRule(
            f"{component} shortcut",
            rf"{src}res([{stages}])\.(\d+)\.shortcut\.norm\.{_BN}",
            rf"{dst}res\1.\2.shortcut.norm.\3",
        ),
    ]


def rename_rules(layout: Detectron2Layout) -> list[RenameRule]:
    """Every rule mapping a Detectron2 key of ``layout`` to maskzoo's (see :mod:`maskzoo.modeling`)."""
    fpn = layout.architecture == "fpn"
    src = r"backbone\.bottom_up\." if fpn else r"backbone\."
    rules = [
        RenameRule("backbone stem", rf"{src}stem\.conv1\.weight", "backbone.body.stem.conv.weight"),
        RenameRule("backbone stem", rf"{src}stem\.conv1\.norm\.{_BN}", r"backbone.body.stem.norm.\1"),
        *_body_rules(src, "backbone.body.", "2-5" if fpn else "2-4", "backbone"),
        RenameRule("RPN head", rf"proposal_generator\.rpn_head\.conv\.{_WB}", r"rpn.head.conv.\1"),
        RenameRule(
            "RPN head", rf"proposal_generator\.rpn_head\.objectness_logits\.{_WB}", r"rpn.head.objectness.\1"
        ),
        RenameRule(
            "RPN head", rf"proposal_generator\.rpn_head\.anchor_deltas\.{_WB}", r"rpn.head.box_deltas.\1"
        ),
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
        *[RenameRule("derived from the config (dropped)", pattern, "") for pattern in _DERIVED],
    ]
    if fpn:
        for level in range(2, 6):
            rules += [
                RenameRule(
                    "FPN lateral",
                    rf"backbone\.fpn_lateral{level}\.{_WB}",
                    rf"backbone.fpn.lateral.{level - 2}.\1",
                ),
                RenameRule(
                    "FPN output",
                    rf"backbone\.fpn_output{level}\.{_WB}",
                    rf"backbone.fpn.output.{level - 2}.\1",
                ),
            ]
        rules += [
            RenameRule("box head", rf"roi_heads\.box_head\.fc([12])\.{_WB}", r"roi_heads.box_head.fc\1.\2")
        ]
    else:
        # res5 is the C4 RoI head's trunk (an nn.Sequential of blocks), shared with the mask branch.
        trunk = "roi_heads.box_head.trunk."
        rules += [
            RenameRule(
                "res5 head", r"roi_heads\.res5\.(\d+)\.conv([123])\.weight", trunk + r"\1.conv\2.weight"
            ),
            RenameRule(
                "res5 head", rf"roi_heads\.res5\.(\d+)\.conv([123])\.norm\.{_BN}", trunk + r"\1.norm\2.\3"
            ),
            RenameRule(
                "res5 head shortcut",
                r"roi_heads\.res5\.(\d+)\.shortcut\.weight",
                trunk + r"\1.shortcut.conv.weight",
            ),
            RenameRule(
                "res5 head shortcut",
                rf"roi_heads\.res5\.(\d+)\.shortcut\.norm\.{_BN}",
                trunk + r"\1.shortcut.norm.\2",
            ),
        ]
    if layout.kind == "mask":
        rules += [
            *[
                RenameRule(
                    "mask head",
                    rf"roi_heads\.mask_head\.mask_fcn{i + 1}\.{_WB}",
                    rf"roi_heads.mask_head.convs.{i}.\1",
                )
                for i in range(len(layout.mask_convs))
            ],
            RenameRule(
                "mask predictor",
                rf"roi_heads\.mask_head\.deconv\.{_WB}",
                r"roi_heads.mask_predictor.deconv.\1",
            ),
            RenameRule(
                "mask predictor",
                rf"roi_heads\.mask_head\.predictor\.{_WB}",
                r"roi_heads.mask_predictor.logits.\1",
            ),
        ]
    else:
        rules += [
            *[
                RenameRule(
                    "keypoint head",
                    rf"roi_heads\.keypoint_head\.conv_fcn{i + 1}\.{_WB}",
                    rf"roi_heads.keypoint_head.convs.{i}.\1",
                )
                for i in range(len(layout.keypoint_convs))
            ],
            RenameRule(
                "keypoint predictor",
                rf"roi_heads\.keypoint_head\.score_lowres\.{_WB}",
                r"roi_heads.keypoint_predictor.deconv.\1",
            ),
        ]
    return rules


# ---- surgery ---------------------------------------------------------------------------------


def background_first(sd: Mapping[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """Detectron2's class layout (K foreground classes, background last) -> maskzoo's (background
    first, K + 1 rows everywhere): class logits rotated; a zero box regressor and a zero mask
    channel for the background. Keys keep Detectron2's names."""
    out = dict(sd)
    for name in ("weight", "bias"):
        cls = sd[f"roi_heads.box_predictor.cls_score.{name}"]
        out[f"roi_heads.box_predictor.cls_score.{name}"] = torch.cat([cls[-1:], cls[:-1]])
        reg = sd[f"roi_heads.box_predictor.bbox_pred.{name}"]
        out[f"roi_heads.box_predictor.bbox_pred.{name}"] = torch.cat(
            [reg.new_zeros((4, *reg.shape[1:])), reg]
        )
        key = f"roi_heads.mask_head.predictor.{name}"
        if key in sd and sd[key].shape[0] > 1:
            out[key] = torch.cat([sd[key].new_zeros((1, *sd[key].shape[1:])), sd[key]])
    log.info(
        "%s: background class moved from the last logit to index 0; zero box regressor%s added for it",
        what,
        " and mask" if "roi_heads.mask_head.predictor.weight" in sd else "",
    )
    return out


def ratio_major_anchors(sd: dict[str, torch.Tensor], sizes: int, ratios: int, what: str) -> None:
    """Permutes the RPN's per-anchor rows from Detectron2's size-major cell-anchor order
    (a = s * ratios + r) to maskzoo's ratio-major one (a = r * sizes + s), in place."""
    if sizes == 1:
        return
    order = torch.tensor([s * ratios + r for r in range(ratios) for s in range(sizes)])
    deltas = (order[:, None] * 4 + torch.arange(4)).reshape(-1)
    for name in ("weight", "bias"):
        key = f"proposal_generator.rpn_head.objectness_logits.{name}"
        sd[key] = sd[key][order]
        key = f"proposal_generator.rpn_head.anchor_deltas.{name}"
        sd[key] = sd[key][deltas]
    log.info(
        "%s: RPN anchor rows permuted from size-major to ratio-major order (%d sizes x %d ratios)",
        what,
        sizes,
        ratios,
    )


# ---- conversion ------------------------------------------------------------------------------


def convert_state_dict(
    sd: Mapping[str, torch.Tensor], model: nn.Module, what: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Renames (and reshapes, see the module doc) a Detectron2 state_dict onto ``model``'s keys, strictly.

    Raises CheckpointError listing every key that does not map (see ``rename.apply_rules``).
    """
    layout = detect_layout(sd, what)
    sd = background_first(sd, what)
    rpn = model.config.rpn
    ratio_major_anchors(sd, len(rpn.anchor_sizes[0]), len(rpn.aspect_ratios), what)
    dropped = sorted(k for k in sd if any(re.fullmatch(p, k) for p in _DERIVED))
    if dropped:
        log.info("%s: dropped %s (given by the config)", what, ", ".join(dropped))
    target = {k: v.shape for k, v in model.state_dict().items()}
    return apply_rules(sd, rename_rules(layout), target, what)


def model_from_checkpoint(obj: Any, what: str, name: str | None = None, **overrides) -> nn.Module:
    """The maskzoo model a Detectron2 file (its unpickled object) describes, filled with its weights.

    Args:
        obj: the object read from a ``.pkl`` (restricted unpickler) or ``.pth`` (weights only) file.
        what: names the file in messages.
        name: maskzoo registry name; default: the one the file's layout implies, with the file's
            widths. A model whose tensors do not fit the file raises.
        overrides: flat config knobs on top of Detectron2's conventions (``box_score_thresh``, ...);
            ``num_classes`` other than the file's re-initialises the class-dependent layers only
            (fine-tuning, see :func:`maskzoo.checkpoint.finetune.with_num_classes`).

    Raises:
        CheckpointError: unknown layout, a ``name`` that does not fit (the message names the
            architecture the file holds and the models it fits), or keys/shapes that do not map.
    """
    sd = _state_dict(obj, what)
    layout = detect_layout(sd, what)
    num_classes = overrides.pop("num_classes", None)
    implied = layout.model_name
    if implied is None:
        raise CheckpointError(f"{what}: {layout.description} has no maskzoo model")
    described = _described_config(layout, config_of(implied))
    if name is None:
        config = described
    else:
        fitting = models_fitting(described)
        if name not in fitting:
            raise CheckpointError(
                f"{what}: holds a {layout.description}, which fits maskzoo model(s) "
                f"{', '.join(repr(n) for n in fitting) or '(none at these widths: load it without a name)'}; "
                f"it cannot fill model {name!r}"
            )
        config = _described_config(layout, config_of(name))
    config = apply_overrides(config, **overrides)
    log.info(
        "%s: %s -> maskzoo %r with Detectron2's conventions (%d classes incl. background)",
        what,
        layout.description,
        config.name,
        config.num_classes,
    )
    model = build_model(config)
    load_state_dict_strict(model, convert_state_dict(sd, model, what), what)
    return model if num_classes is None else with_num_classes(model, num_classes, what)
