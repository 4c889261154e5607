"""Files written by ``torch.save`` (training states, torchvision's weights), read without running code."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from maskzoo.checkpoint.errors import CheckpointError

__all__ = ["is_torch_file", "read_torch_file", "state_dict_of"]

# torch.save writes a zip archive; files from before torch 1.6 are a bare pickle (protocol 2).
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"


def is_torch_file(path: str | os.PathLike) -> bool:
    """True if the file starts like a ``torch.save`` file (a zip archive or a pickle)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head == _ZIP_MAGIC or head[:1] == _PICKLE_MAGIC


def read_torch_file(path: str | os.PathLike) -> Any:
    """The object in a ``torch.save`` file, on the CPU, read with ``torch.load(weights_only=True)``:
    tensors, containers and plain values only, so loading can never execute code.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is not a torch file, or holds objects a weights-only load refuses.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first_line = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(
            f"checkpoint {path!r}: cannot be read as plain tensors with torch.load(weights_only=True) "
            f"({type(e).__name__}: {first_line}); maskzoo never unpickles arbitrary objects"
        ) from e


def state_dict_of(obj: Any, what: str) -> dict[str, torch.Tensor]:
    """The state_dict in an object read from a torch file: a bare state_dict or a dict holding one
    under ``"model"`` / ``"state_dict"`` (torchvision's reference training scripts).

    Raises CheckpointError, naming ``what``, when ``obj`` holds no name -> tensor dict.
    """
    if isinstance(obj, Mapping):
        for wrapper in ("model", "state_dict"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                obj = obj[wrapper]
                break
    if (
        not isinstance(obj, Mapping)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise CheckpointError(f"{what}: does not hold a state_dict (a dict of name -> tensor)")
    return dict(obj)
