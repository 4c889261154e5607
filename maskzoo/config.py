"""Model configuration: one frozen dataclass tree per model, every threshold and size visible.

A model is fully described by a :class:`ModelConfig`. Its sections mirror the stages of the paper:
image transform, backbone, RPN, box head, mask head, keypoint head. Defaults are those of the
Mask R-CNN paper as implemented by torchvision's detection models, so that torchvision's published
weights reproduce torchvision's outputs.

Users override single knobs by flat keyword names (:data:`OVERRIDES`); wherever torchvision's
detection builders have a keyword for the same knob the name is the same (``box_score_thresh``,
``rpn_pre_nms_top_n_test``, ``min_size``, ...), so code moving over changes nothing::

    cfg = apply_overrides(cfg, box_score_thresh=0.3, num_classes=4)

Unknown names raise :class:`TypeError` listing the valid ones; bad values raise :class:`ValueError`.

A config round-trips through JSON (:func:`config_to_json`, :func:`config_from_json`): checkpoints
and training states store the complete config that way.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

NORMS = ("frozen_bn", "bn", "gn")
ARCHITECTURES = ("fpn", "c4")
# Norm of the FPN convolutions and of the RoI heads' convolutions: "none" (a biased conv alone) or
# "bn" (a bias-free conv followed by BatchNorm2d, torchvision's improved "v2" models).
HEAD_NORMS = ("none", "bn")
CHANNEL_ORDERS = ("RGB", "BGR")
# How M x M mask probabilities are pasted into the image, and how keypoint heatmaps are decoded:
# the conventions of the library whose weights the model holds (see postprocess.py, keypoint_head.py).
PASTE_RULES = ("torchvision", "detectron2")
KEYPOINT_DECODERS = ("torchvision", "detectron2")


@dataclass(frozen=True)
class TransformConfig:
    """Resizing, normalisation and batching of the input images (done inside the model)."""

    # Shorter side after resizing. Training draws one of these per image; inference uses the last.
    min_size: tuple[int, ...] = (800,)
    # Upper bound of the longer side after resizing (the scale is the smaller of the two ratios).
    max_size: int = 1333
    # Per-channel mean and std of RGB images in [0, 1] (ImageNet statistics).
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    # The batch is zero-padded (bottom/right) to a multiple of this (the coarsest backbone stride).
    size_divisible: int = 32
    # Channel order the weights expect. Images always come in RGB; "BGR" reverses the channels
    # before normalising (Detectron2's MSRA and Caffe2-trained weights).
    channel_order: str = "RGB"
    # Input images (float in [0, 1]) are multiplied by this before image_mean / image_std, which
    # are in the scaled units: 1.0 for torchvision's weights, 255.0 for Detectron2's (0-255 pixels;
    # uint8 images are then taken as they are, exactly).
    pixel_scale: float = 1.0


@dataclass(frozen=True)
class BackboneConfig:
    """ResNet / ResNeXt trunk (bottleneck blocks for depth >= 50, basic blocks below)."""

    # 18, 34, 50, 101 or 152.
    depth: int = 50
    # ResNeXt cardinality (1 = plain ResNet) and width of each group in the first stage.
    groups: int = 1
    width_per_group: int = 64
    # "frozen_bn": fixed affine from BN statistics (fine-tuning from pretrained weights);
    # "bn": trainable BatchNorm2d; "gn": GroupNorm with 32 groups (both for training from scratch).
    norm: str = "frozen_bn"
    # eps of the frozen batch norms. torchvision uses 1e-5, but 0.0 for its COCO detection weights.
    frozen_bn_eps: float = 1e-5
    # Trainable stages counted from the top: 0 = none, 5 = all (res5, res4, res3, res2, stem).
    trainable_layers: int = 3
    # Where a strided bottleneck block subsamples: False = in its 3x3 conv (torchvision, "ResNet
    # v1.5", Detectron2's X101), True = in its first 1x1 conv (the original MSRA ResNets that
    # Detectron2's R50/R101 weights start from).
    stride_in_1x1: bool = False
    # How a frozen batch norm computes at inference: "scale_shift" (x * s + t with s, t folded from
    # the statistics, torchvision) or "batch_norm" (the fused F.batch_norm op, Detectron2). The two
    # round differently; the source's order keeps converted models' outputs equal to its own.
    frozen_bn_arithmetic: str = "scale_shift"
    # Output channels of the stem, and of res2 (each later stage doubles it; 0 = 64 x the block
    # expansion: 256 for bottlenecks, 64 for basic blocks). Bottleneck widths are
    # groups x width_per_group x 2^(stage - 2) either way.
    stem_channels: int = 64
    res2_channels: int = 0


@dataclass(frozen=True)
class RPNConfig:
    """Region proposal network: anchors, matching, sampling and proposal selection."""

    # Anchor sizes (square side in input pixels) per feature level, and aspect ratios (h / w).
    anchor_sizes: tuple[tuple[int, ...], ...] = ((32,), (64,), (128,), (256,), (512,))
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    # Anchors kept per feature level (by objectness logit) before NMS, training / inference.
    pre_nms_top_n_train: int = 2000
    pre_nms_top_n_test: int = 1000
    # Proposals kept per image after NMS, training / inference.
    post_nms_top_n_train: int = 2000
    post_nms_top_n_test: int = 1000
    # IoU threshold of the per-level NMS over proposals.
    nms_thresh: float = 0.7
    # Anchors with IoU >= fg are positive, < bg negative, in between ignored (plus the best
    # anchor of every ground-truth box, "low-quality matches").
    fg_iou_thresh: float = 0.7
    bg_iou_thresh: float = 0.3
    # Anchors sampled per image for the loss, and the positive share of them.
    batch_size_per_image: int = 256
    positive_fraction: float = 0.5
    # Proposals with objectness probability below this are dropped.
    score_thresh: float = 0.0
    # Proposals narrower or shorter than this (pixels) are dropped.
    min_box_size: float = 1e-3
    # False: a side equal to min_box_size is kept (torchvision); True: sides must exceed it
    # (Detectron2, whose min_box_size 0 drops exactly the empty boxes).
    min_box_size_strict: bool = False
    # 3x3 conv + ReLU layers of the RPN head before its two 1x1 predictors (torchvision v2: 2).
    head_convs: int = 1
    # Anchor stride (input pixels) per level; () = the padded batch size divided by the map size
    # (torchvision). Detectron2 uses the backbone's nominal strides (4, 8, ..., 64; C4: 16), which
    # differ from the ratio on P6 when the padded size is not a multiple of 64.
    anchor_strides: tuple[int, ...] = ()
    # Cell anchors rounded to whole pixels (torchvision) or exact (Detectron2).
    round_anchors: bool = True
    # NMS ranks proposals by objectness probability (torchvision) or by the logit (Detectron2; the
    # same order except where float32 sigmoids of confident proposals tie).
    rank_by_logit: bool = False


@dataclass(frozen=True)
class BoxHeadConfig:
    """Second stage: RoI box classification and regression."""

    # RoIAlign output size, samples per bin (<= 0: adaptive) and pixel model of the box pooler.
    pool_size: int = 7
    sampling_ratio: int = 2
    # False = torchvision's / Detectron's original pixel model (no half-pixel shift).
    aligned: bool = False
    # Width of the hidden FC layers (FPN head).
    representation_size: int = 1024
    # FPN head: 3x3 conv + norm + ReLU layers before the FCs (torchvision v2: four of 256), their
    # norm (HEAD_NORMS), and the number of hidden FC layers (2, or 1 after convolutions in v2).
    conv_channels: tuple[int, ...] = ()
    norm: str = "none"
    num_fc: int = 2
    # Proposal matching: IoU >= fg is foreground, < bg background.
    fg_iou_thresh: float = 0.5
    bg_iou_thresh: float = 0.5
    # Proposals sampled per image for the loss, and the foreground share of them.
    batch_size_per_image: int = 512
    positive_fraction: float = 0.25
    # Box coding weights (wx, wy, ww, wh).
    bbox_reg_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    # Inference: detections with class probability <= this are dropped.
    score_thresh: float = 0.05
    # Inference: IoU threshold of the per-class NMS.
    nms_thresh: float = 0.5
    # Inference: detections kept per image (highest scores).
    detections_per_img: int = 100
    # Inference: detections narrower or shorter than this (pixels) are dropped.
    min_box_size: float = 1e-2
    # Inference: after mapping to the input image, detections with zero width or height are
    # dropped (Detectron2's final filter, after the top-k).
    drop_empty: bool = False


@dataclass(frozen=True)
class MaskHeadConfig:
    """Mask branch (paper section 3, Figure 4)."""

    # RoIAlign output size, samples per bin and pixel model of the mask pooler.
    pool_size: int = 14
    sampling_ratio: int = 2
    aligned: bool = False
    # Output channels of the 3x3 convolutions (FPN head); empty for C4 (res5 is shared).
    conv_channels: tuple[int, ...] = (256, 256, 256, 256)
    # Channels of the 2x2 stride-2 deconvolution.
    deconv_channels: int = 256
    # One mask per class (paper default) or a single class-agnostic mask.
    class_agnostic: bool = False
    # Norm after each 3x3 convolution (HEAD_NORMS; torchvision v2: "bn").
    norm: str = "none"
    # Pasting into the image (PASTE_RULES): "torchvision" (one pixel of zero padding around the
    # mask, resized to the integer box) or "detectron2" (bilinear sampling at pixel centres of the
    # exact box, zero outside).
    paste: str = "torchvision"


@dataclass(frozen=True)
class KeypointHeadConfig:
    """Keypoint branch (paper section 5): heatmaps of one-hot keypoint masks."""

    pool_size: int = 14
    sampling_ratio: int = 2
    aligned: bool = False
    # Eight 3x3 conv layers of 512 channels.
    conv_channels: tuple[int, ...] = (512,) * 8
    # Keypoints per instance (17 for COCO persons).
    num_keypoints: int = 17
    # The 4x4 stride-2 deconvolution is followed by bilinear upsampling by this factor.
    upsample_factor: int = 2
    # Heatmap decoding (KEYPOINT_DECODERS): the keypoint score is the heatmap logit at the maximum
    # ("torchvision") or the spatial softmax there, normalised over the pooled heatmap ("detectron2").
    decode: str = "torchvision"


@dataclass(frozen=True)
class ModelConfig:
    """A complete model: registry name, architecture and every section."""

    # Registry name this config was built from.
    name: str
    # "fpn": FPN on res2-res5 (P2-P6); "c4": RPN on res4, res5 as the RoI head (paper Fig. 4 left).
    architecture: str = "fpn"
    # Classes including background (index 0). 91 is COCO's id layout as torchvision uses it;
    # Detectron2's weights give 81 (labels 1..80 = Detectron2's contiguous classes 0..79, plus one).
    num_classes: int = 91
    # Channels of every FPN level.
    fpn_channels: int = 256
    # Norm of the FPN's lateral and output convolutions (HEAD_NORMS; torchvision v2: "bn").
    fpn_norm: str = "none"
    transform: TransformConfig = field(default_factory=TransformConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    rpn: RPNConfig = field(default_factory=RPNConfig)
    box: BoxHeadConfig = field(default_factory=BoxHeadConfig)
    # None: no mask branch (keypoint-only models).
    mask: MaskHeadConfig | None = field(default_factory=MaskHeadConfig)
    # None: no keypoint branch.
    keypoint: KeypointHeadConfig | None = None

    def __post_init__(self):
        validate(self)


# Flat override name -> (section, field). Section None is the ModelConfig itself.
OVERRIDES: dict[str, tuple[str | None, str]] = {
    "num_classes": (None, "num_classes"),
    "min_size": ("transform", "min_size"),
    "max_size": ("transform", "max_size"),
    "image_mean": ("transform", "image_mean"),
    "image_std": ("transform", "image_std"),
    "trainable_backbone_layers": ("backbone", "trainable_layers"),
    "norm": ("backbone", "norm"),
    "frozen_bn_eps": ("backbone", "frozen_bn_eps"),
    "rpn_pre_nms_top_n_train": ("rpn", "pre_nms_top_n_train"),
    "rpn_pre_nms_top_n_test": ("rpn", "pre_nms_top_n_test"),
    "rpn_post_nms_top_n_train": ("rpn", "post_nms_top_n_train"),
    "rpn_post_nms_top_n_test": ("rpn", "post_nms_top_n_test"),
    "rpn_nms_thresh": ("rpn", "nms_thresh"),
    "rpn_fg_iou_thresh": ("rpn", "fg_iou_thresh"),
    "rpn_bg_iou_thresh": ("rpn", "bg_iou_thresh"),
    "rpn_batch_size_per_image": ("rpn", "batch_size_per_image"),
    "rpn_positive_fraction": ("rpn", "positive_fraction"),
    "rpn_score_thresh": ("rpn", "score_thresh"),
    "box_score_thresh": ("box", "score_thresh"),
    "box_nms_thresh": ("box", "nms_thresh"),
    "box_detections_per_img": ("box", "detections_per_img"),
    "box_fg_iou_thresh": ("box", "fg_iou_thresh"),
    "box_bg_iou_thresh": ("box", "bg_iou_thresh"),
    "box_batch_size_per_image": ("box", "batch_size_per_image"),
    "box_positive_fraction": ("box", "positive_fraction"),
    "bbox_reg_weights": ("box", "bbox_reg_weights"),
    "mask_class_agnostic": ("mask", "class_agnostic"),
    "num_keypoints": ("keypoint", "num_keypoints"),
}


def _as_tuple(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value


def apply_overrides(config: ModelConfig, **overrides) -> ModelConfig:
    """A copy of ``config`` with the given flat knobs changed (see :data:`OVERRIDES`).

    Raises:
        TypeError: an unknown knob (the message lists the valid names), or a knob of a branch the
            model does not have (``num_keypoints`` on a mask-only model).
        ValueError: a value out of range (from :func:`validate`).
    """
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise TypeError(
            f"unknown config override(s) {unknown} for model {config.name!r}; "
            f"valid names: {', '.join(sorted(OVERRIDES))}"
        )
    top: dict = {}
    sections: dict[str, dict] = {}
    for key, value in overrides.items():
        section, name = OVERRIDES[key]
        if key == "min_size" and isinstance(value, int):
            value = (value,)
        value = _as_tuple(value)
        if section is None:
            top[name] = value
        else:
            if getattr(config, section) is None:
                raise TypeError(
                    f"override {key!r} does not apply: model {config.name!r} has no {section} branch"
                )
            sections.setdefault(section, {})[name] = value
    for section, changes in sections.items():
        top[section] = dataclasses.replace(getattr(config, section), **changes)
    return dataclasses.replace(config, **top)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _check_fraction(name: str, value: float) -> None:
    _check(0.0 <= float(value) <= 1.0, f"{name} must be in [0, 1], got {value}")


def validate(config: ModelConfig) -> None:
    """Raises ValueError naming the first field whose value is out of range."""
    _check(config.architecture in ARCHITECTURES, f"architecture must be one of {ARCHITECTURES}")
    _check(
        int(config.num_classes) >= 2, f"num_classes must be >= 2 (background + 1), got {config.num_classes}"
    )
    t = config.transform
    _check(
        len(t.min_size) >= 1 and all(int(s) > 0 for s in t.min_size),
        f"min_size must be positive, got {t.min_size}",
    )
    _check(int(t.max_size) > 0, f"max_size must be positive, got {t.max_size}")
    _check(len(t.image_mean) == 3 and len(t.image_std) == 3, "image_mean and image_std need 3 values")
    _check(t.channel_order in CHANNEL_ORDERS, f"channel_order must be one of {CHANNEL_ORDERS}")
    _check(float(t.pixel_scale) > 0, f"pixel_scale must be positive, got {t.pixel_scale}")
    _check(config.fpn_norm in HEAD_NORMS, f"fpn_norm must be one of {HEAD_NORMS}, got {config.fpn_norm!r}")
    _check(all(float(s) > 0 for s in t.image_std), f"image_std must be positive, got {t.image_std}")
    b = config.backbone
    _check(b.depth in (18, 34, 50, 101, 152), f"backbone depth must be 18/34/50/101/152, got {b.depth}")
    _check(b.norm in NORMS, f"norm must be one of {NORMS}, got {b.norm!r}")
    _check(
        0 <= b.trainable_layers <= 5, f"trainable_backbone_layers must be in [0, 5], got {b.trainable_layers}"
    )
    _check(b.frozen_bn_eps >= 0, f"frozen_bn_eps must be >= 0, got {b.frozen_bn_eps}")
    _check(
        b.frozen_bn_arithmetic in ("scale_shift", "batch_norm"),
        f"frozen_bn_arithmetic must be 'scale_shift' or 'batch_norm', got {b.frozen_bn_arithmetic!r}",
    )
    r = config.rpn
    for name in (
        "pre_nms_top_n_train",
        "pre_nms_top_n_test",
        "post_nms_top_n_train",
        "post_nms_top_n_test",
        "batch_size_per_image",
    ):
        _check(int(getattr(r, name)) > 0, f"rpn_{name} must be positive, got {getattr(r, name)}")
    for name in ("nms_thresh", "fg_iou_thresh", "bg_iou_thresh", "positive_fraction", "score_thresh"):
        _check_fraction(f"rpn_{name}", getattr(r, name))
    _check(r.bg_iou_thresh <= r.fg_iou_thresh, "rpn_bg_iou_thresh must be <= rpn_fg_iou_thresh")
    _check(int(r.head_convs) >= 1, f"rpn head_convs must be >= 1, got {r.head_convs}")
    _check(
        len(r.anchor_strides) in (0, len(r.anchor_sizes)) and all(int(s) > 0 for s in r.anchor_strides),
        f"rpn anchor_strides must be empty or one positive stride per level, got {r.anchor_strides}",
    )
    bx = config.box
    for name in ("nms_thresh", "fg_iou_thresh", "bg_iou_thresh", "positive_fraction", "score_thresh"):
        _check_fraction(f"box_{name}", getattr(bx, name))
    _check(bx.bg_iou_thresh <= bx.fg_iou_thresh, "box_bg_iou_thresh must be <= box_fg_iou_thresh")
    _check(
        int(bx.detections_per_img) > 0,
        f"box_detections_per_img must be positive, got {bx.detections_per_img}",
    )
    _check(int(bx.batch_size_per_image) > 0, "box_batch_size_per_image must be positive")
    _check(bx.norm in HEAD_NORMS, f"box head norm must be one of {HEAD_NORMS}, got {bx.norm!r}")
    _check(int(bx.num_fc) in (1, 2), f"box head num_fc must be 1 or 2, got {bx.num_fc}")
    if config.mask is not None:
        _check(config.mask.norm in HEAD_NORMS, f"mask head norm must be one of {HEAD_NORMS}")
        _check(config.mask.paste in PASTE_RULES, f"mask paste must be one of {PASTE_RULES}")
    _check(
        len(bx.bbox_reg_weights) == 4 and all(w > 0 for w in bx.bbox_reg_weights),
        f"bbox_reg_weights must be 4 positive numbers, got {bx.bbox_reg_weights}",
    )
    if config.keypoint is not None:
        _check(int(config.keypoint.num_keypoints) > 0, "num_keypoints must be positive")
        _check(
            config.keypoint.decode in KEYPOINT_DECODERS, f"keypoint decode must be one of {KEYPOINT_DECODERS}"
        )


def describe(config: ModelConfig) -> str:
    """Every field of the config, one ``section.field = value`` a line (for ``maskzoo list``)."""
    lines = [f"{config.name}"]
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            for g in dataclasses.fields(value):
                lines.append(f"  {f.name}.{g.name} = {getattr(value, g.name)!r}")
        else:
            lines.append(f"  {f.name} = {value!r}")
    return "\n".join(lines)


# ---- JSON ------------------------------------------------------------------------------------


def config_to_json(config: ModelConfig) -> str:
    """The complete config as one JSON object (keys sorted, tuples as lists)."""
    return json.dumps(to_json(dataclasses.asdict(config)), sort_keys=True)


def config_from_json(text: str) -> ModelConfig:
    """Rebuilds a ModelConfig from :func:`config_to_json`'s output.

    Raises ValueError for malformed JSON, an unknown field (a file written by a newer maskzoo) or a
    value out of range (:func:`validate`).
    """
    return _dataclass_from_dict(ModelConfig, json.loads(text), "config")


def to_json(value: Any) -> Any:
    """``value`` (nested mappings, sequences and scalars) as plain JSON types.

    Raises TypeError naming a value JSON cannot hold.
    """
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [to_json(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"value {value!r} of type {type(value).__name__} cannot be stored as JSON")


def _from_json(value: Any) -> Any:
    # Configs are frozen dataclasses with tuple fields (image_mean, bbox_reg_weights, ...): JSON
    # only has lists, so sequences come back as tuples.
    if isinstance(value, dict):
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_from_json(v) for v in value)
    return value


def _dataclass_from_dict(cls, values: Any, where: str):
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected an object, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown} (written by a newer maskzoo?)")
    kwargs = {}
    for name, value in values.items():
        section = _dataclass_type(hints[name])
        if section is not None and value is not None:
            kwargs[name] = _dataclass_from_dict(section, value, f"{where}.{name}")
        else:
            kwargs[name] = _from_json(value)
    return cls(**kwargs)


def _dataclass_type(hint):
    if dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):  # Optional[Section]
        if dataclasses.is_dataclass(arg):
            return arg
    return None
