"""maskzoo: Mask R-CNN and Keypoint R-CNN built on roiops.

    import maskzoo
    model = maskzoo.build("r50_fpn")                       # random init, COCO's 91-class layout
    model = maskzoo.build("r50_fpn", num_classes=4, box_score_thresh=0.3)
    maskzoo.list_models()
    maskzoo.save(model, "r50_fpn.safetensors")
    model = maskzoo.load("r50_fpn.safetensors")

The names below are defined in :mod:`maskzoo.zoo` (models), :mod:`maskzoo.config` (configs) and
:mod:`maskzoo.checkpoint` (files); this module only gathers them.
"""

from maskzoo._version import __version__
from maskzoo.checkpoint import load, save
from maskzoo.config import ModelConfig, apply_overrides
from maskzoo.zoo import build, build_from_config, describe, get_config, list_models

__all__ = [
    "ModelConfig",
    "__version__",
    "apply_overrides",
    "build",
    "build_from_config",
    "describe",
    "get_config",
    "list_models",
    "load",
    "save",
]
