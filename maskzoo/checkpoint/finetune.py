"""Fine-tuning a converted model on another class set: only the class-dependent layers start over."""

from __future__ import annotations

import dataclasses
import logging

from torch import nn

from maskzoo.checkpoint.errors import CheckpointError
from maskzoo.modeling.build import build_model

log = logging.getLogger("maskzoo.checkpoint")

__all__ = ["with_num_classes"]

# The layers whose shapes depend on the number of classes (class logits, per-class box deltas and
# masks); everything else must keep its shape.
CLASS_DEPENDENT = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.logits.")


def with_num_classes(model: nn.Module, num_classes: int, what: str) -> nn.Module:
    """A copy of ``model`` (a filled maskzoo model) with ``num_classes`` classes (background
    included): every tensor is kept except the class-dependent layers, which keep their random
    initialisation; a message (logger ``maskzoo.checkpoint``, level WARNING) lists them.

    Raises CheckpointError if a tensor outside the class-dependent layers would change shape.
    """
    if num_classes == model.config.num_classes:
        return model
    target = build_model(dataclasses.replace(model.config, num_classes=num_classes))
    source = model.state_dict()
    kept, reset = {}, []
    for key, tensor in target.state_dict().items():
        if source[key].shape == tensor.shape:
            kept[key] = source[key]
        elif key.startswith(CLASS_DEPENDENT):
            reset.append(key)
        else:
            raise CheckpointError(
                f"{what}: num_classes={num_classes} changes {key}, which is not class-dependent"
            )
    target.load_state_dict({**target.state_dict(), **kept})
    log.warning(
        "%s: fine-tuning with num_classes=%d (the file has %d): re-initialised %s; every other tensor "
        "comes from the file",
        what,
        num_classes,
        model.config.num_classes,
        ", ".join(reset),
    )
    return target.train(model.training)
