"""maskzoo: Mask R-CNN and Keypoint R-CNN built on roiops.

    import maskzoo
    model = maskzoo.build("r50_fpn")                       # random init, COCO's 91-class layout
    model = maskzoo.build("r50_fpn", num_classes=4, box_score_thresh=0.3)
    maskzoo.list_models()
"""

__version__ = "0.1.0"

# ---- models (branch models) ----
from maskzoo import zoo as _zoo  # noqa: E402,F401  (registers the model configs)
from maskzoo.config import ModelConfig, apply_overrides  # noqa: E402
from maskzoo.config import describe as _describe_config  # noqa: E402
from maskzoo.registry import config_of as _config_of  # noqa: E402
from maskzoo.registry import names as _names  # noqa: E402


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return _names()


def get_config(name: str, **overrides) -> ModelConfig:
    """The config ``build(name, **overrides)`` would use. Unknown names / knobs raise with the valid ones."""
    return apply_overrides(_config_of(name), **overrides)


def describe(name: str, **overrides) -> str:
    """Every hyper-parameter of a model, one ``section.field = value`` a line."""
    return _describe_config(get_config(name, **overrides))


def build_from_config(config: ModelConfig):
    """The randomly initialised model of a (possibly saved) config."""
    return _zoo.build_model(config)


def build(name: str, **overrides):
    """A randomly initialised model by registry name, with flat config overrides
    (torchvision's keyword names: ``num_classes``, ``box_score_thresh``, ``min_size``, ...).

    Raises KeyError for an unknown model name, TypeError for an unknown override (both list the
    valid names), ValueError for an out-of-range value.
    """
    return build_from_config(get_config(name, **overrides))
# ---- end models ----
