"""Which registered models a checkpoint's architecture fits: the shape-determining part of a config.

Two configs *fit the same files* when every tensor of their models has the same name and shape
apart from the class- and keypoint-count dependent layers. The frozen / trainable kind of the
backbone's batch norm does not count (the same four tensors), nor do thresholds, sizes and
inference conventions. Used to name, in an error, the models a file of the wrong architecture
would load into.
"""

from __future__ import annotations

from maskzoo.config import ModelConfig
from maskzoo.registry import config_of, names

__all__ = ["models_fitting", "structure"]


def structure(config: ModelConfig) -> tuple:
    """The fields of ``config`` that decide its tensors' names and shapes (class counts excepted)."""
    b, r, box = config.backbone, config.rpn, config.box
    mask = config.mask
    kp = config.keypoint
    return (
        config.architecture,
        config.fpn_channels if config.architecture == "fpn" else None,
        config.fpn_norm,
        (b.depth, b.groups, b.width_per_group, b.stem_channels, b.res2_channels, b.norm == "gn"),
        (tuple(len(s) * len(r.aspect_ratios) for s in r.anchor_sizes), r.head_convs),
        (box.pool_size, box.representation_size, box.conv_channels, box.norm, box.num_fc),
        None
        if mask is None
        else (mask.pool_size, mask.conv_channels, mask.deconv_channels, mask.norm, mask.class_agnostic),
        None if kp is None else (kp.pool_size, kp.conv_channels),
    )


def models_fitting(config: ModelConfig) -> list[str]:
    """Registered model names whose tensors have ``config``'s names and shapes (see the module doc)."""
    want = structure(config)
    return [n for n in names() if structure(config_of(n)) == want]
