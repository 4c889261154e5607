"""The training state: everything ``maskzoo train --resume`` needs to continue a run exactly.

One ``torch.save`` file per checkpoint, ``OUT/checkpoints/checkpoint_NNNNNNN.pt`` (the 1-based
count of finished iterations, seven digits), holding a dict:

==================  ================================================================================
``model``           the model's state_dict
``optimizer``       ``torch.optim.SGD.state_dict()`` (momentum buffers)
``scheduler``       the learning-rate scheduler's state_dict
``scaler``          the AMP gradient scaler's state_dict
``iteration``       finished iterations (int)
``rng``             per process (index = rank) the random states :func:`rng_state` captures
``train_config``    the :class:`~maskzoo.engine.train.TrainConfig` as a dict (tuples as lists)
``model_spec``      ``{"config_json": ..., "class_names": [...]}`` for a maskzoo model (else ``{}``):
                    what rebuilds the model without knowing its name (:func:`model_spec_of`)
``world_size``      number of training processes that wrote it
==================  ================================================================================

``OUT/checkpoints/last_checkpoint`` holds the file name of the newest one. Every value is a tensor,
a container or a plain Python value (numpy's random state is stored as a list), so the file loads
with ``torch.load(weights_only=True)``: reading a checkpoint never runs code. Files are written
with :func:`maskzoo.files.write_atomic`.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from maskzoo.checkpoint.errors import CheckpointError
from maskzoo.checkpoint.io import load_state_dict_strict
from maskzoo.checkpoint.torch_file import read_torch_file
from maskzoo.config import apply_overrides, config_from_json, config_to_json
from maskzoo.files import write_atomic
from maskzoo.modeling.build import build_model

__all__ = [
    "checkpoint_path",
    "is_training_state",
    "latest_checkpoint",
    "load_training_checkpoint",
    "model_from_training_state",
    "model_spec_of",
    "rng_state",
    "set_rng_state",
    "write_training_state",
]

_FOLDER = "checkpoints"
_MARKER = "last_checkpoint"


def checkpoint_path(out_dir: str | os.PathLike, iteration: int) -> Path:
    """``out_dir/checkpoints/checkpoint_NNNNNNN.pt`` of ``iteration`` (finished iterations)."""
    return Path(out_dir) / _FOLDER / f"checkpoint_{iteration:07d}.pt"


def write_training_state(out_dir: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Writes ``state`` (the dict of the module docstring) to its checkpoint file under ``out_dir``
    and marks it as the newest; returns its path. Both writes are atomic, the marker last, so the
    marker never names a file that is not complete."""
    path = checkpoint_path(out_dir, int(state["iteration"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: torch.save(dict(state), f))
    write_atomic(path.parent / _MARKER, path.name)
    return path


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The newest training checkpoint under ``out_dir/checkpoints`` (None when there is none)."""
    folder = Path(out_dir) / _FOLDER
    marker = folder / _MARKER
    if marker.is_file():
        path = folder / marker.read_text().strip()
        if path.is_file():
            return path
    found = sorted(folder.glob("checkpoint_*.pt"))
    return found[-1] if found else None


def load_training_checkpoint(path: str | os.PathLike) -> dict:
    """A training checkpoint's dict, read without executing code (``weights_only=True``).

    Raises FileNotFoundError for a missing file, CheckpointError for one that is not a torch file.
    """
    return read_torch_file(path)


def is_training_state(obj: Any) -> bool:
    """True for the dict a training checkpoint holds (as opposed to a foreign state_dict)."""
    return isinstance(obj, Mapping) and {"model", "iteration", "model_spec"} <= obj.keys()


def model_spec_of(model: nn.Module) -> dict:
    """What rebuilds a maskzoo model from a training checkpoint: its config (JSON) and class names;
    ``{}`` for a model without a maskzoo config (nothing can rebuild it)."""
    config = getattr(model, "config", None)
    if config is None:
        return {}
    spec = {"config_json": config_to_json(config)}
    if getattr(model, "class_names", None):
        spec["class_names"] = list(model.class_names)
    return spec


def model_from_training_state(
    state: Mapping[str, Any], what: str, name: str | None = None, **overrides
) -> nn.Module:
    """The model a training checkpoint's dict holds, rebuilt from its ``model_spec`` and filled.

    ``name``: the registry name the caller expects (None: any). ``overrides``: flat config knobs.

    Raises:
        CheckpointError: the checkpoint has no model config (written for a model maskzoo did not
            build), holds another model than ``name``, or its tensors do not match.
    """
    spec = state.get("model_spec") or {}
    if "config_json" not in spec:
        raise CheckpointError(
            f"{what} does not say which model it holds (no model_spec.config_json); "
            "was it written by maskzoo train?"
        )
    config = config_from_json(spec["config_json"])
    if name is not None and config.name != name:
        raise CheckpointError(f"{what} holds model {config.name!r}, not {name!r}")
    model = build_model(apply_overrides(config, **overrides))
    load_state_dict_strict(model, state["model"], what)
    if spec.get("class_names"):
        model.class_names = list(spec["class_names"])
    return model


def rng_state() -> dict:
    """This process's random states (torch, Python, numpy, every CUDA device) in loadable form."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        # numpy's key array as a list: a weights-only load refuses numpy arrays.
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restores what :func:`rng_state` captured (the CUDA states only where CUDA is present)."""
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x):
    # random.setstate wants tuples; the state may come back from the file with lists.
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x
