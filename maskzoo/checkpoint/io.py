"""maskzoo's own checkpoint format: one safetensors file that describes the model it holds.

File layout: a plain safetensors file (tensors by their ``state_dict`` names, float32 as trained)
whose string metadata holds the build recipe:

====================  =====================================================================
``format``            ``"maskzoo"``: tells our files from any other safetensors file
``format_version``    ``"1"``; a newer version than this code knows is refused, not guessed
``model``             registry name, e.g. ``"r50_fpn"`` (``maskzoo.list_models()``)
``config``            JSON of the complete :class:`~maskzoo.config.ModelConfig`
``overrides``         JSON of the flat ``build`` knobs that differ from the registered default
                      (information for people; ``config`` is what is rebuilt)
``class_names``       JSON list of class names (index = label), or ``null``
``tensors_sha256``    SHA-256 over every tensor's name, dtype, shape and bytes (sorted by name):
                      safetensors itself has no checksum, so this catches flipped bytes
``maskzoo_version``   the version that wrote the file (information only)
====================  =====================================================================

so ``maskzoo.load(path)`` rebuilds exactly the saved model from its config and fills it. The whole
config is stored, not only the overrides, so a file keeps meaning the same model when a registered
default changes later. A safetensors file cannot execute code when read, unlike a pickle.

Saving is atomic (:func:`maskzoo.files.write_atomic`): a crash at any point leaves either the old
file or the new one, never a torn file.

Loading is strict: missing keys, unexpected keys and shape mismatches are all listed in one
:class:`CheckpointError`; nothing is silently skipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from maskzoo._version import __version__
from maskzoo.checkpoint.errors import CheckpointError, listed
from maskzoo.config import OVERRIDES, ModelConfig, apply_overrides, config_from_json, config_to_json, to_json
from maskzoo.files import write_atomic
from maskzoo.modeling.build import build_model
from maskzoo.modeling.fuse import is_fused
from maskzoo.registry import config_of as registered_config_of
from maskzoo.registry import names

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Header",
    "is_safetensors",
    "load_model_file",
    "load_state_dict_strict",
    "read_header",
    "read_tensors",
    "save",
    "tensors_digest",
]

FORMAT = "maskzoo"
FORMAT_VERSION = 1


def config_of(model: nn.Module) -> ModelConfig:
    """The :class:`~maskzoo.config.ModelConfig` a maskzoo model was built from (``model.config``)."""
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise ValueError(
            "model: not a maskzoo model (it has no ModelConfig in model.config); "
            "only models made by maskzoo.build or maskzoo.load can be saved with maskzoo.save"
        )
    return config


def flat_overrides(config: ModelConfig) -> dict[str, Any]:
    """The flat ``build`` knobs in which ``config`` differs from its registered default (information)."""
    try:
        default = registered_config_of(config.name)
    except KeyError:
        return {}
    changed = {}
    for knob, (section, name) in OVERRIDES.items():
        ours = config if section is None else getattr(config, section)
        theirs = default if section is None else getattr(default, section)
        if ours is None or theirs is None:
            continue
        if getattr(ours, name) != getattr(theirs, name):
            changed[knob] = getattr(ours, name)
    return changed


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``tensors`` (CPU, contiguous), by name."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        # A byte view (not numpy: bfloat16 has no numpy dtype) of the tensor's storage.
        digest.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def _metadata(config, class_names: tuple[str, ...] | None, digest: str) -> dict[str, str]:
    return {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "model": config.name,
        "config": config_to_json(config),
        "overrides": json.dumps(to_json(flat_overrides(config)), sort_keys=True),
        "class_names": json.dumps(None if class_names is None else list(class_names)),
        "tensors_sha256": digest,
        "maskzoo_version": __version__,
    }


def _tensors_for_file(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share storage and non-contiguous ones; a copy of each
    # tensor on the CPU satisfies both and leaves the model untouched.
    return {name: t.detach().to("cpu", copy=True).contiguous() for name, t in state_dict.items()}


def save(model: nn.Module, path: str | os.PathLike, *, class_names: list[str] | None = None) -> None:
    """Writes ``model``'s weights and full config to one safetensors file, atomically.

    Args:
        model: a maskzoo model (made by ``maskzoo.build`` or ``maskzoo.load``; it carries its
            :class:`~maskzoo.config.ModelConfig` as ``model.config``). Any device.
        path: destination file; replaced atomically if it exists. Its directory must exist.
        class_names: names of the classes, index = label (``num_classes`` of them); default:
            ``model.class_names`` if the model has them, else none are stored.

    Raises:
        ValueError: ``model`` is not a maskzoo model, or is fused for inference; ``class_names``
            is not ``num_classes`` strings.
    """
    # safetensors is an optional dependency (the maskzoo extra): imported when a file is written.
    from safetensors.torch import save as safetensors_bytes

    config = config_of(model)
    if is_fused(model):
        raise ValueError(
            "model: fused for inference (batch norms folded away), so its tensors no longer match "
            f"{config.name!r}; save the model before calling fuse_for_inference"
        )
    if class_names is None:
        class_names = getattr(model, "class_names", None)
    if class_names is not None:
        class_names = tuple(class_names)
        if not all(isinstance(n, str) for n in class_names) or len(class_names) != config.num_classes:
            raise ValueError(
                f"class_names: must be {config.num_classes} strings (num_classes), "
                f"got {len(class_names)} items"
            )
    tensors = _tensors_for_file(model.state_dict())
    data = safetensors_bytes(tensors, metadata=_metadata(config, class_names, tensors_digest(tensors)))
    write_atomic(path, data)


@dataclasses.dataclass(frozen=True)
class Header:
    """What a maskzoo checkpoint says about itself."""

    config: ModelConfig  # the complete model description
    class_names: tuple[str, ...] | None  # index = label, or None
    overrides: dict[str, Any]  # flat knobs differing from the registered default (information)
    maskzoo_version: str
    tensors_sha256: str | None  # None in files written without one


def is_safetensors(path: str | os.PathLike) -> bool:
    """True if the file starts like a safetensors file (8-byte header length, then a JSON object)."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def read_header(path: str | os.PathLike) -> Header:
    """Reads and checks the metadata of a maskzoo checkpoint without loading its tensors.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not a readable safetensors file, not a maskzoo checkpoint, a format
            version this code does not know, an unknown model name, or malformed metadata.
    """
    # Optional dependency, imported on use (see save).
    from safetensors import safe_open

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as e:  # safetensors reports a bad header as its own error type
        raise CheckpointError(f"checkpoint {path!r}: not a readable safetensors file ({e})") from e
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {path!r}: a safetensors file but not a maskzoo checkpoint "
            f"(metadata 'format' is {metadata.get('format')!r}, expected {FORMAT!r})"
        )
    try:
        version = int(metadata["format_version"])
    except (KeyError, ValueError) as e:
        raise CheckpointError(
            f"checkpoint {path!r}: malformed maskzoo metadata 'format_version' ({e})"
        ) from e
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path!r}: format version {version} is newer than this maskzoo reads "
            f"({FORMAT_VERSION}); upgrade maskzoo"
        )
    name = metadata.get("model")
    if name not in names():
        raise CheckpointError(
            f"checkpoint {path!r}: unknown model {name!r}; registered models: {', '.join(names())}"
        )
    try:
        config = config_from_json(metadata["config"])
        class_names = json.loads(metadata.get("class_names", "null"))
        overrides = json.loads(metadata.get("overrides", "{}"))
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(
            f"checkpoint {path!r}: malformed maskzoo metadata ({type(e).__name__}: {e})"
        ) from e
    if config.name != name:
        raise CheckpointError(
            f"checkpoint {path!r}: metadata names model {name!r} but its config is {config.name!r}"
        )
    if class_names is not None and not (
        isinstance(class_names, list) and all(isinstance(n, str) for n in class_names)
    ):
        raise CheckpointError(f"checkpoint {path!r}: malformed maskzoo metadata 'class_names'")
    return Header(
        config,
        None if class_names is None else tuple(class_names),
        overrides,
        metadata.get("maskzoo_version", "?"),
        metadata.get("tensors_sha256"),
    )


def read_tensors(path: str | os.PathLike, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, on the CPU, checked against ``expected_sha256`` if given.

    Raises CheckpointError if the file is truncated or damaged.
    """
    # Optional dependency, imported on use (see save).
    from safetensors.torch import load_file

    try:
        tensors = load_file(os.fspath(path), device="cpu")
    except Exception as e:
        raise CheckpointError(f"checkpoint {os.fspath(path)!r}: cannot read its tensors ({e})") from e
    if expected_sha256 is not None and tensors_digest(tensors) != expected_sha256:
        raise CheckpointError(
            f"checkpoint {os.fspath(path)!r}: corrupted (the tensors' SHA-256 differs from the one "
            "recorded when it was saved)"
        )
    return tensors


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Copies ``state_dict`` into ``model``, requiring the same keys and the same shapes.

    Raises:
        CheckpointError: listing every missing key, unexpected key and shape mismatch, with
            ``source`` (a file name) in the message.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if state_dict[k].shape != expected[k].shape
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {listed(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {listed(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {listed(mismatched)}")
    if problems:
        raise CheckpointError(f"{source} does not match the model:\n  " + "\n  ".join(problems))
    model.load_state_dict(state_dict, strict=True)


def load_model_file(path: str | os.PathLike, **overrides) -> nn.Module:
    """Rebuilds the model a maskzoo checkpoint describes and fills it with the file's weights.

    Args:
        path: a file written by :func:`save` (or ``python -m maskzoo convert``).
        overrides: flat config knobs to change on top of the file's config (``box_score_thresh``,
            ...); knobs that change tensor shapes (``num_classes``) make the load fail.

    Returns:
        The model on the CPU, in training mode like ``maskzoo.build``, with ``model.class_names``
        set when the file has them.

    Raises:
        FileNotFoundError, CheckpointError: see :func:`read_header`; also when the file's tensors do
            not match the model (every missing/unexpected key and shape mismatch listed).
        TypeError, ValueError: an override is unknown or out of range.
    """
    header = read_header(path)
    model = build_model(apply_overrides(header.config, **overrides))
    load_state_dict_strict(
        model, read_tensors(path, header.tensors_sha256), f"checkpoint {os.fspath(path)!r}"
    )
    if header.class_names is not None:
        model.class_names = list(header.class_names)
    return model
