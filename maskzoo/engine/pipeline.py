"""The chain every training entry point runs: data set -> model sized for it -> train -> evaluate.

``maskzoo train`` and ``maskzoo demo`` both call :func:`training_set`, :func:`config_for_dataset`,
:func:`build_for_dataset` and :func:`train_then_evaluate`; they differ only in where the data and the
settings come from.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from maskzoo.checkpoint.errors import CheckpointError
from maskzoo.checkpoint.fit import models_fitting, structure
from maskzoo.checkpoint.loader import load
from maskzoo.config import ModelConfig
from maskzoo.data.coco import CocoDataset
from maskzoo.data.transforms import default_train_transforms, flip_pairs_from_names
from maskzoo.engine.evaluate import evaluate
from maskzoo.engine.train import TrainConfig, train
from maskzoo.modeling.build import build_model
from maskzoo.modeling.rcnn import RCNN
from maskzoo.zoo import get_config

__all__ = [
    "TrainEvalResult",
    "build_for_dataset",
    "config_for_dataset",
    "train_then_evaluate",
    "training_set",
]


def training_set(annotations: str | os.PathLike, images: str | os.PathLike) -> CocoDataset:
    """A COCO data set with the default training augmentation (keypoints flipped by their names)."""
    dataset = CocoDataset(annotations, images, train=True)
    dataset.transforms = default_train_transforms(flip_pairs_from_names(dataset.keypoint_names))
    return dataset


def config_for_dataset(name: str, dataset: CocoDataset, **overrides) -> ModelConfig:
    """Registered model ``name`` with ``overrides``, sized for ``dataset``: its number of classes,
    and for keypoint models its number of keypoints, unless ``overrides`` name them.

    Raises as :func:`maskzoo.get_config`.
    """
    overrides = {"num_classes": dataset.num_classes, **overrides}
    config = get_config(name, **overrides)
    if config.keypoint is not None and dataset.num_keypoints and "num_keypoints" not in overrides:
        config = get_config(name, num_keypoints=dataset.num_keypoints, **overrides)
    return config


def build_for_dataset(
    config: ModelConfig, dataset: CocoDataset, *, seed: int, weights: str | os.PathLike | None = None
) -> RCNN:
    """The model of ``config``, initialised from ``seed`` (the same weights on every process),
    filled from ``weights`` (any checkpoint :func:`maskzoo.load` reads) if given, and carrying the
    data set's class names (saved with it).

    A torchvision or Detectron2 file fine-tunes: it must fit ``config``'s architecture, its
    conventions (input format, anchors, pooling, post-processing) come with it, and with another
    number of classes only the class-dependent layers start from ``seed`` (a warning lists them).
    """
    torch.manual_seed(seed)
    if weights is not None:
        model = load(weights, num_classes=config.num_classes)
        if structure(model.config) != structure(config):
            fits = ", ".join(models_fitting(model.config)) or "no registered model at these widths"
            raise CheckpointError(
                f"weights {os.fspath(weights)!r} hold a {model.config.name!r} model of another "
                f"architecture than {config.name!r} (they fit: {fits})"
            )
        model.class_names = dataset.class_names
        return model
    model = build_model(config)
    model.class_names = dataset.class_names
    return model


@dataclass(frozen=True)
class TrainEvalResult:
    """What :func:`train_then_evaluate` did."""

    summary: dict  # train()'s summary: iteration, checkpoint, resumed_from, final_loss
    metrics: dict | None  # COCO metrics on the held-out set (None: no set, or not rank 0)
    seconds: dict[str, float]  # wall time of "train" and, with a held-out set, "eval"


def train_then_evaluate(
    model: RCNN,
    train_set,
    cfg: TrainConfig,
    train_dir: str | os.PathLike,
    *,
    val_set: CocoDataset | None = None,
    eval_dir: str | os.PathLike | None = None,
    device=None,
    resume: bool = False,
    progress: bool = True,
) -> TrainEvalResult:
    """Trains ``model`` (:func:`~maskzoo.engine.train.train`, files in ``train_dir``), then scores it
    on ``val_set`` with COCO's metrics (:func:`~maskzoo.engine.evaluate.evaluate`, files in
    ``eval_dir``, default ``train_dir/eval``). Raises as those two."""
    seconds = {}
    start = time.perf_counter()
    summary = train(model, train_set, cfg, train_dir, resume=resume, device=device, progress=progress)
    seconds["train"] = time.perf_counter() - start
    metrics = None
    if val_set is not None:
        start = time.perf_counter()
        out = Path(train_dir) / "eval" if eval_dir is None else eval_dir
        metrics = evaluate(model, val_set, device=device, out_dir=out, progress=progress)
        seconds["eval"] = time.perf_counter() - start
    return TrainEvalResult(summary, metrics, seconds)
