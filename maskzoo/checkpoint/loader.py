"""The one way a model is read from a file: :func:`load`.

``maskzoo.load``, ``maskzoo.build(name, checkpoint=...)`` and every CLI command call it. The file is
recognised by its content, not its name:

- a maskzoo model file (safetensors, :mod:`maskzoo.checkpoint.io`): its stored config is rebuilt;
- a training state (``checkpoint_NNNNNNN.pt``, :mod:`maskzoo.checkpoint.training`): rebuilt from
  the config it stores;
- a foreign layout, converted on load: torchvision's detectors and ImageNet ResNets
  (:mod:`maskzoo.checkpoint.torchvision`), Detectron2's model zoo (``.pkl``, read by a restricted
  unpickler, and ``.pth``; :mod:`maskzoo.checkpoint.detectron2`).
"""

from __future__ import annotations

import os

from torch import nn

from maskzoo.checkpoint import detectron2, torchvision
from maskzoo.checkpoint.errors import CheckpointError
from maskzoo.checkpoint.io import is_safetensors, load_model_file, read_header
from maskzoo.checkpoint.pickle_file import is_plain_pickle, read_pickle_file
from maskzoo.checkpoint.torch_file import is_torch_file, read_torch_file, state_dict_of
from maskzoo.checkpoint.training import is_training_state, model_from_training_state

__all__ = ["load"]


def load(path: str | os.PathLike, *, name: str | None = None, **overrides) -> nn.Module:
    """The model a checkpoint file holds, rebuilt and filled with the file's weights.

    Args:
        path: a maskzoo model file (``maskzoo.save``, ``maskzoo convert``), a training state
            (``OUT/checkpoints/checkpoint_NNNNNNN.pt``) or a torchvision file (a detector, or an
            ImageNet ResNet that fills the backbone trunk of model ``name``).
        name: the registry name the file must hold (``maskzoo.build(name, checkpoint=path)``);
            None: the model the file describes (a torchvision detector: the one its layout implies).
        overrides: flat config knobs on top of the file's config (``box_score_thresh``, ...);
            knobs that change tensor shapes make the load fail, except ``num_classes`` on a
            torchvision or Detectron2 file: fine-tuning, the class-dependent layers start over
            (:func:`maskzoo.checkpoint.finetune.with_num_classes` lists them).

    Returns:
        The model on the CPU, in training mode like ``maskzoo.build``, with ``model.class_names``
        set when the file has them.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is unreadable, of another model than ``name``, or its tensors do
            not match (every missing/unexpected key and shape mismatch listed).
        TypeError, ValueError: an override is unknown or out of range.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    what = f"checkpoint {path!r}"
    if is_safetensors(path):
        if name is not None:
            held = read_header(path).config.name
            if held != name:
                raise CheckpointError(f"{what} holds model {held!r}, not {name!r}")
        return load_model_file(path, **overrides)
    if is_plain_pickle(path):  # Detectron2's model zoo: numpy arrays only, see pickle_file
        return detectron2.model_from_checkpoint(read_pickle_file(path), what, name, **overrides)
    if not is_torch_file(path):
        raise CheckpointError(
            f"{what}: not a readable safetensors file (a maskzoo model) nor a torch file "
            "(a training state or a torchvision file)"
        )
    obj = read_torch_file(path)
    if is_training_state(obj):
        return model_from_training_state(obj, what, name, **overrides)
    if detectron2.is_detectron2_checkpoint(obj):  # a Detectron2-trained .pth
        return detectron2.model_from_checkpoint(obj, what, name, **overrides)
    return torchvision.model_from_state_dict(state_dict_of(obj, what), what, name, **overrides)
