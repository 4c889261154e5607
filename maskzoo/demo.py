"""The main job (``make demo``): train a small Mask R-CNN from scratch on the shapes set, on the CPU.

Stages, each timed: write the synthetic shapes set (:mod:`maskzoo.data.shapes`), build the
registered model ``r18_fpn_demo`` (``r18_fpn`` narrowed for 2 CPU cores, see :mod:`maskzoo.zoo`),
train and evaluate it with the same chain as ``maskzoo train``
(:func:`maskzoo.engine.pipeline.train_then_evaluate`), print the table, and draw the predictions of
a few held-out images (``predictions.png``) next to the loss curve (``train/loss_curve.png``).

:class:`DemoConfig` holds the data and the schedule; the model's knobs are the registered model's,
only its input size follows the images. Why this schedule: a batch of 4, learning rate 0.02 after a
short warm-up (a run at 0.04 and 192 px learned visibly slower), two decays in the last quarter.
The budget is meant to be what 2 idle cores train in about 8 minutes.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from maskzoo.config import ModelConfig
from maskzoo.data.coco import CocoDataset
from maskzoo.data.shapes import ShapesConfig, write_dataset
from maskzoo.engine.evaluate import format_table
from maskzoo.engine.pipeline import build_for_dataset, train_then_evaluate, training_set
from maskzoo.engine.train import TrainConfig
from maskzoo.files import write_atomic
from maskzoo.viz import draw_predictions
from maskzoo.zoo import get_config

__all__ = ["DemoConfig", "demo_model_config", "run_demo"]


@dataclass(frozen=True)
class DemoConfig:
    """Every setting of ``maskzoo demo``: data, model name, schedule, pictures."""

    seed: int = 0
    # Data: square images with 1..max_shapes shapes of circumradius 0.08..0.22 of the side.
    image_size: int = 128
    train_images: int = 1000
    val_images: int = 100
    max_shapes: int = 3
    # Model: a registered name (maskzoo list); its input size is set to image_size.
    model: str = "r18_fpn_demo"
    # Schedule: iterations of batch_size images; lr drops by 10 at the two fractions of iters.
    iters: int = 1200
    batch_size: int = 4
    lr: float = 0.02
    warmup_iters: int = 100
    step_fractions: tuple[float, float] = (0.75, 0.92)
    clip_grad_norm: float = 10.0
    checkpoint_period: int = 400
    # Pictures: held-out images drawn in predictions.png, and the score they must reach.
    picture_images: int = 6
    picture_score_thresh: float = 0.5


def demo_model_config(cfg: DemoConfig, num_classes: int) -> ModelConfig:
    """The config of the demo's model: ``cfg.model`` with ``num_classes`` classes and images kept
    at their ``cfg.image_size`` (no resizing)."""
    return get_config(cfg.model, num_classes=num_classes, min_size=(cfg.image_size,), max_size=cfg.image_size)


def _train_config(cfg: DemoConfig) -> TrainConfig:
    return TrainConfig(
        iters=cfg.iters,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup_iters=cfg.warmup_iters,
        steps=tuple(int(f * cfg.iters) for f in cfg.step_fractions),
        clip_grad_norm=cfg.clip_grad_norm,
        checkpoint_period=cfg.checkpoint_period,
        seed=cfg.seed,
    )


def _write_data(cfg: DemoConfig, root: Path) -> dict[str, Path]:
    shapes = ShapesConfig(
        image_size=cfg.image_size,
        max_shapes=cfg.max_shapes,
        min_radius=0.08 * cfg.image_size,
        max_radius=0.22 * cfg.image_size,
    )
    stamp = root / "generated.json"
    wanted = {
        "shapes": dataclasses.asdict(shapes),
        "seed": cfg.seed,
        "train": cfg.train_images,
        "val": cfg.val_images,
    }
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return {"train": root / "train.json", "val": root / "val.json"}  # same seed: same files
    paths = write_dataset(root, cfg.train_images, cfg.val_images, seed=cfg.seed, cfg=shapes)
    write_atomic(stamp, json.dumps(wanted))
    return paths


def _upscaled(image: torch.Tensor, pred: dict, factor: int):
    """Image and prediction ``factor`` times larger, so small demo images get readable labels."""
    if factor == 1:
        return image, pred
    image = F.interpolate(image[None], scale_factor=factor, mode="nearest")[0]
    pred = dict(pred, boxes=pred["boxes"] * factor)
    if "masks" in pred:
        pred["masks"] = F.interpolate(pred["masks"], scale_factor=factor, mode="nearest")
    return image, pred


def _picture(model, dataset, cfg: DemoConfig, path: Path, device) -> None:
    count = min(cfg.picture_images, len(dataset))
    tiles = []
    model.eval()
    with torch.inference_mode():
        for i in range(count):
            image, _ = dataset[i]
            pred = {k: v.cpu() for k, v in model([image.to(device)])[0].items()}
            image, pred = _upscaled(image, pred, max(1, 256 // max(image.shape[-2:])))
            tiles.append(
                draw_predictions(image, pred, dataset.class_names, score_thresh=cfg.picture_score_thresh)
            )
    if not tiles:
        return
    cols = min(3, count)
    rows = (count + cols - 1) // cols
    w, h = tiles[0].size
    sheet = Image.new("RGB", (cols * w, rows * h), "white")
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % cols) * w, (i // cols) * h))
    write_atomic(path, lambda f: sheet.save(f, format="PNG"))


def run_demo(
    cfg: DemoConfig,
    out: str | Path,
    *,
    device: str | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> dict:
    """Run every stage of the demo into ``out``; returns the metrics and the time of each stage."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device or "cpu")
    if threads is not None:
        torch.set_num_threads(threads)
    times = {}

    start = time.perf_counter()
    paths = _write_data(cfg, out / "data")
    times["data"] = time.perf_counter() - start
    print(
        f"[demo] shapes set: {cfg.train_images} train + {cfg.val_images} val images of "
        f"{cfg.image_size} px in {out / 'data'} ({times['data']:.0f} s)",
        flush=True,
    )

    train_set = training_set(paths["train"], out / "data" / "train")
    val_set = CocoDataset(paths["val"], out / "data" / "val", train=False)
    config = demo_model_config(cfg, train_set.num_classes)
    model = build_for_dataset(config, train_set, seed=cfg.seed)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"[demo] model: {config.name} from scratch (norm={config.backbone.norm}, FPN "
        f"{config.fpn_channels} channels), {n_params / 1e6:.1f} M parameters; {cfg.iters} iterations of "
        f"{cfg.batch_size} images on {device} ({torch.get_num_threads()} threads)",
        flush=True,
    )

    run = train_then_evaluate(
        model,
        train_set,
        _train_config(cfg),
        out / "train",
        val_set=val_set,
        eval_dir=out / "eval",
        device=device,
        progress=progress,
    )
    times.update(run.seconds)

    start = time.perf_counter()
    _picture(model, val_set, cfg, out / "predictions.png", device)
    times["picture"] = time.perf_counter() - start
    total = sum(times.values())

    print()
    print(f"COCO metrics on the {len(val_set)} held-out images (AP in %):")
    print(format_table(run.metrics))
    print()
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
    print(f"[demo] times: {stages}; total {total:.0f} s")
    print(
        f"[demo] predictions: {out / 'predictions.png'}; loss curve: {out / 'train' / 'loss_curve.png'}; "
        f"model: {out / 'train' / 'model_final.safetensors'}"
    )
    summary = {"metrics": run.metrics, "seconds": times, "config": dataclasses.asdict(cfg)}
    write_atomic(out / "summary.json", json.dumps(summary, indent=1))
    return summary
