"""The main job (``make demo``): train a small Mask R-CNN from scratch on the shapes set, on the CPU.

Stages, each timed: write the synthetic shapes set (:mod:`maskzoo.data.shapes`), build ``r18_fpn``
slimmed for 2 CPU cores (:class:`DemoConfig`: every knob that differs from the registered model is
a field here), train it with the regular engine (:func:`maskzoo.engine.train.train`), evaluate it on
the held-out split with COCO's metrics, print the table, and draw the predictions of a few held-out
images (``predictions.png``) next to the loss curve (``train/loss_curve.png``).

Why these settings: with no pretrained backbone, the norms must train (``norm="bn"``). Objects are
20-56 px in 128 px images, so the anchors are halved (16-256 instead of 32-512) and images are
not resized. The heads are narrowed (FPN 64 channels, a two-layer mask head, 256-wide box head)
and far fewer anchors/RoIs are sampled: on a 2-core CPU the default 256-channel heads at 512 RoIs
per image cost several times the backbone. A batch of 4, learning rate 0.02 after a short warm-up
(a run at 0.04 and 192 px learned visibly slower), two decays in the last quarter. The budget is
meant to be what 2 idle cores train in about 8 minutes.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["DemoConfig", "demo_model_config", "run_demo"]


@dataclass(frozen=True)
class DemoConfig:
    """Every setting of ``maskzoo demo``: data, model changes to ``r18_fpn``, schedule."""

    seed: int = 0
    # Data: square images with 1..max_shapes shapes of circumradius 0.08..0.22 of the side.
    image_size: int = 128
    train_images: int = 1000
    val_images: int = 100
    max_shapes: int = 3
    # Model: r18_fpn with trainable batch norm, narrowed for the CPU.
    base_model: str = "r18_fpn"
    norm: str = "bn"
    fpn_channels: int = 64
    box_representation_size: int = 256
    mask_conv_channels: tuple[int, ...] = (64, 64)
    anchor_sizes: tuple[tuple[int, ...], ...] = ((16,), (32,), (64,), (128,), (256,))
    rpn_pre_nms_top_n_train: int = 600
    rpn_post_nms_top_n_train: int = 300
    rpn_pre_nms_top_n_test: int = 300
    rpn_post_nms_top_n_test: int = 100
    rpn_batch_size_per_image: int = 128
    box_batch_size_per_image: int = 64
    box_detections_per_img: int = 20
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


def demo_model_config(cfg: DemoConfig, num_classes: int):
    """The :class:`~maskzoo.config.ModelConfig` of the demo: ``cfg.base_model`` with cfg's changes."""
    import maskzoo

    base = maskzoo.get_config(
        cfg.base_model, num_classes=num_classes, norm=cfg.norm,
        min_size=(cfg.image_size,), max_size=cfg.image_size,
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=cfg.rpn_batch_size_per_image,
        box_batch_size_per_image=cfg.box_batch_size_per_image,
        box_detections_per_img=cfg.box_detections_per_img,
    )
    return dataclasses.replace(
        base,
        fpn_channels=cfg.fpn_channels,
        rpn=dataclasses.replace(base.rpn, anchor_sizes=cfg.anchor_sizes),
        box=dataclasses.replace(base.box, representation_size=cfg.box_representation_size),
        mask=dataclasses.replace(base.mask, conv_channels=cfg.mask_conv_channels,
                                 deconv_channels=cfg.mask_conv_channels[-1]),
    )


def _write_data(cfg: DemoConfig, root: Path) -> dict[str, Path]:
    from maskzoo.data.shapes import ShapesConfig, write_dataset

    shapes = ShapesConfig(image_size=cfg.image_size, max_shapes=cfg.max_shapes,
                          min_radius=0.08 * cfg.image_size, max_radius=0.22 * cfg.image_size)
    stamp = root / "generated.json"
    wanted = {"shapes": dataclasses.asdict(shapes), "seed": cfg.seed, "train": cfg.train_images,
              "val": cfg.val_images}
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return {"train": root / "train.json", "val": root / "val.json"}  # same seed: same files
    paths = write_dataset(root, cfg.train_images, cfg.val_images, seed=cfg.seed, cfg=shapes)
    stamp.write_text(json.dumps(wanted))
    return paths


def _upscaled(image: torch.Tensor, pred: dict, factor: int):
    """Image and prediction ``factor`` times larger, so small demo images get readable labels."""
    import torch.nn.functional as F

    if factor == 1:
        return image, pred
    image = F.interpolate(image[None], scale_factor=factor, mode="nearest")[0]
    pred = dict(pred, boxes=pred["boxes"] * factor)
    if "masks" in pred:
        pred["masks"] = F.interpolate(pred["masks"], scale_factor=factor, mode="nearest")
    return image, pred


def _picture(model, dataset, cfg: DemoConfig, path: Path, device) -> None:
    from PIL import Image

    from maskzoo.viz import draw_predictions

    count = min(cfg.picture_images, len(dataset))
    tiles = []
    model.eval()
    with torch.inference_mode():
        for i in range(count):
            image, _ = dataset[i]
            pred = {k: v.cpu() for k, v in model([image.to(device)])[0].items()}
            image, pred = _upscaled(image, pred, max(1, 256 // max(image.shape[-2:])))
            tiles.append(draw_predictions(image, pred, dataset.class_names,
                                          score_thresh=cfg.picture_score_thresh))
    if not tiles:
        return
    cols = min(3, count)
    rows = (count + cols - 1) // cols
    w, h = tiles[0].size
    sheet = Image.new("RGB", (cols * w, rows * h), "white")
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % cols) * w, (i // cols) * h))
    sheet.save(path)


def run_demo(cfg: DemoConfig, out: str | Path, *, device: str | None = None, threads: int | None = None,
             progress: bool = True) -> dict:
    """Run every stage of the demo into ``out``; returns the metrics and the time of each stage."""
    import maskzoo
    from maskzoo.data.coco import CocoDataset
    from maskzoo.data.transforms import default_train_transforms, flip_pairs_from_names
    from maskzoo.engine.evaluate import evaluate, format_table
    from maskzoo.engine.train import TrainConfig, train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device or "cpu")
    if threads is not None:
        torch.set_num_threads(threads)
    times = {}

    start = time.perf_counter()
    paths = _write_data(cfg, out / "data")
    times["data"] = time.perf_counter() - start
    print(f"[demo] shapes set: {cfg.train_images} train + {cfg.val_images} val images of "
          f"{cfg.image_size} px in {out / 'data'} ({times['data']:.0f} s)", flush=True)

    train_set = CocoDataset(paths["train"], out / "data" / "train", train=True)
    train_set.transforms = default_train_transforms(flip_pairs_from_names(train_set.keypoint_names))
    val_set = CocoDataset(paths["val"], out / "data" / "val", train=False)

    torch.manual_seed(cfg.seed)
    model = maskzoo.build_from_config(demo_model_config(cfg, train_set.num_classes))
    model.class_names = train_set.class_names
    n_params = sum(p.numel() for p in model.parameters())
    print(f"[demo] model: {cfg.base_model} from scratch (norm={cfg.norm}, FPN {cfg.fpn_channels} channels), "
          f"{n_params / 1e6:.1f} M parameters; {cfg.iters} iterations of {cfg.batch_size} images on "
          f"{device} ({torch.get_num_threads()} threads)", flush=True)

    train_cfg = TrainConfig(
        iters=cfg.iters, batch_size=cfg.batch_size, lr=cfg.lr, warmup_iters=cfg.warmup_iters,
        steps=tuple(int(f * cfg.iters) for f in cfg.step_fractions), clip_grad_norm=cfg.clip_grad_norm,
        checkpoint_period=cfg.checkpoint_period, seed=cfg.seed)
    start = time.perf_counter()
    train(model, train_set, train_cfg, out / "train", device=device, progress=progress)
    times["train"] = time.perf_counter() - start

    start = time.perf_counter()
    metrics = evaluate(model, val_set, device=device, out_dir=out / "eval", progress=progress)
    times["eval"] = time.perf_counter() - start

    start = time.perf_counter()
    _picture(model, val_set, cfg, out / "predictions.png", device)
    times["picture"] = time.perf_counter() - start
    total = sum(times.values())

    print()
    print(f"COCO metrics on the {len(val_set)} held-out images (AP in %):")
    print(format_table(metrics))
    print()
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
    print(f"[demo] times: {stages}; total {total:.0f} s")
    print(f"[demo] predictions: {out / 'predictions.png'}; loss curve: {out / 'train' / 'loss_curve.png'}; "
          f"model: {out / 'train' / 'model_final.safetensors'}")
    summary = {"metrics": metrics, "seconds": times, "config": dataclasses.asdict(cfg)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
