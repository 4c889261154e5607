"""Command line: ``python -m maskzoo {list, shapes, train, eval, predict, convert, export, demo}``.

    maskzoo list                                      every model, its config, the published weights it loads
    maskzoo shapes OUT --train 1000 --val 100 --seed 0
    maskzoo train --model r50_fpn --data DATA --out DIR [--val DATA] [--iters N --batch B --lr LR ...]
    torchrun --nproc_per_node=4 -m maskzoo train ...  the same on 4 processes (DDP)
    maskzoo eval --checkpoint CK --data DATA [--out DIR] [--dtype bf16 [--precision-policy heads]]
    maskzoo predict IMAGE... --checkpoint CK --out DIR [--dtype bf16 [--precision-policy heads]]
    maskzoo export [--model NAME] [--checkpoint CK] --format pt2|onnx --out FILE
    maskzoo convert WEIGHTS OUT.safetensors [--model NAME]   torchvision .pth, Detectron2 .pkl/.pth
    maskzoo demo --out out/demo                       shapes set -> train r18_fpn_demo on the CPU -> COCO AP

DATA is a COCO annotation JSON (images in ``--images``, by default the folder next to it named like
the file without ``.json``: ``train.json`` -> ``train/``), or a folder holding ``train.json`` +
``train/`` (and ``val.json`` + ``val/``) as ``maskzoo shapes`` writes it.

CK is any file ``maskzoo.load`` reads: a ``.safetensors`` file from ``maskzoo.checkpoint.save`` /
``maskzoo train`` (``model_final.safetensors``), a training checkpoint
(``checkpoints/checkpoint_NNNNNNN.pt``) or a torchvision detector file.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch

from maskzoo import published
from maskzoo.checkpoint.io import save
from maskzoo.checkpoint.loader import load
from maskzoo.engine import distributed
from maskzoo.engine.evaluate import encode_mask, evaluate, format_table
from maskzoo.engine.train import TrainConfig
from maskzoo.files import write_atomic
from maskzoo.modeling.fuse import fuse_for_inference
from maskzoo.modeling.precision import POLICIES
from maskzoo.runtime import keep_freed_memory
from maskzoo.zoo import describe, list_models

__all__ = ["main", "build_parser", "resolve_data"]

# Commands that read or draw images import the data, drawing and demo modules when they run: those
# need Pillow (an optional dependency, the maskzoo extra), which `maskzoo list` and `convert` do not.


# ----------------------------------------------------------------------------------------------------
# Helpers


def resolve_data(path: str | Path, split: str, images: str | Path | None = None) -> tuple[Path, Path]:
    """(annotation JSON, image folder) of a ``--data`` argument (see the module doc)."""
    path = Path(path)
    if path.is_dir():
        json_path, image_dir = path / f"{split}.json", path / split
    else:
        json_path = path
        image_dir = path.with_suffix("") if path.suffix == ".json" else path.parent
    if images is not None:
        image_dir = Path(images)
    if not json_path.is_file():
        raise FileNotFoundError(f"annotation file not found: {json_path} (from --data {path})")
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder not found: {image_dir} (pass --images)")
    return json_path, image_dir


def _parse_overrides(pairs: list[str]) -> dict:
    """``["box_score_thresh=0.3", "min_size=(640, 800)"]`` -> dict (values as Python literals)."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _device(name: str | None):
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: torch sees no CUDA device")
    return torch.device(name)


def _runtime(args) -> None:
    if not getattr(args, "no_keep_freed_memory", False):
        keep_freed_memory()


def _add_runtime_flag(p) -> None:
    p.add_argument(
        "--no-keep-freed-memory",
        action="store_true",
        help="leave glibc's malloc settings alone (default: keep freed memory; maskzoo.runtime)",
    )


# ----------------------------------------------------------------------------------------------------
# Commands


def cmd_list(args) -> int:
    for name in list_models():
        if args.names_only:
            print(name)
        else:
            print(describe(name))
            files = published.for_model(name)
            print("  published weights that load into it:" if files else "  published weights: none")
            for p in files:
                print(f"    {p.source} {p.description}: {p.file_name} (COCO {p.ap_text()} AP)")
            print()
    return 0


def cmd_shapes(args) -> int:
    from maskzoo.data.shapes import ShapesConfig, write_dataset  # Pillow: see the top

    cfg = ShapesConfig(
        image_size=args.size,
        max_shapes=args.max_shapes,
        min_radius=args.size * 0.08 if args.min_radius is None else args.min_radius,
        max_radius=args.size * 0.22 if args.max_radius is None else args.max_radius,
    )
    start = time.perf_counter()
    paths = write_dataset(args.out, train=args.train, val=args.val, seed=args.seed, cfg=cfg)
    for split, p in paths.items():
        print(f"{split}: {p} + {p.with_suffix('')}/")
    print(f"wrote {args.train + args.val} images in {time.perf_counter() - start:.1f} s")
    return 0


def cmd_train(args) -> int:
    from maskzoo.data.coco import CocoDataset  # Pillow: see the top
    from maskzoo.engine.pipeline import (
        build_for_dataset,
        config_for_dataset,
        train_then_evaluate,
        training_set,
    )

    _runtime(args)
    info = distributed.init_distributed(args.device)
    try:
        json_path, image_dir = resolve_data(args.data, "train", args.images)
        dataset = training_set(json_path, image_dir)
        config = config_for_dataset(args.model, dataset, **_parse_overrides(args.set))
        model = build_for_dataset(config, dataset, seed=args.seed, weights=args.weights)
        cfg = TrainConfig(
            iters=args.iters,
            batch_size=args.batch,
            lr=args.lr,
            warmup_iters=args.warmup,
            steps=tuple(args.steps) if args.steps is not None else (args.iters * 2 // 3, args.iters * 8 // 9),
            gamma=args.gamma,
            clip_grad_norm=args.clip_grad,
            amp=args.amp,
            checkpoint_period=args.checkpoint_period,
            seed=args.seed,
            num_workers=args.workers,
            weight_decay=args.weight_decay,
        )
        val = None
        if args.val:
            vjson, vimages = resolve_data(args.val, "val", args.val_images)
            val = CocoDataset(vjson, vimages, train=False)
        run = train_then_evaluate(
            model,
            dataset,
            cfg,
            args.out,
            val_set=val,
            device=info.device,
            resume=args.resume,
            progress=not args.quiet,
        )
        if distributed.is_main_process():
            final = Path(args.out) / "model_final.safetensors"
            print(f"trained to iteration {run.summary['iteration']}; model: {final}")
        if run.metrics is not None:
            print(format_table(run.metrics))
    finally:
        distributed.cleanup()
    return 0


def cmd_eval(args) -> int:
    from maskzoo.data.coco import CocoDataset  # Pillow: see the top

    _runtime(args)
    info = distributed.init_distributed(args.device)
    try:
        json_path, image_dir = resolve_data(args.data, "val", args.images)
        dataset = CocoDataset(json_path, image_dir, train=False)
        model = load(args.checkpoint, **_parse_overrides(args.set)).to(info.device)
        model = fuse_for_inference(model, dtype=DTYPES[args.dtype], policy=args.precision_policy)
        out = Path(args.out) if args.out else Path(args.checkpoint).parent / "eval"
        metrics = evaluate(
            model, dataset, device=info.device, out_dir=out, batch_size=args.batch, progress=not args.quiet
        )
        if metrics is not None:
            print(format_table(metrics))
            print(f"metrics: {out / 'metrics.json'}; COCO results: {out}/coco_results_*.json")
    finally:
        distributed.cleanup()
    return 0


def predictions_to_json(prediction: dict, class_names, image_path, size) -> dict:
    """One image's detections as JSON: boxes (x1, y1, x2, y2), labels, names, scores, RLE masks."""
    dets = []
    n = len(prediction["scores"])
    for i in range(n):
        lab = int(prediction["labels"][i])
        det = {
            "box": [round(float(v), 2) for v in prediction["boxes"][i]],
            "label": lab,
            "class_name": class_names[lab] if class_names and lab < len(class_names) else str(lab),
            "score": round(float(prediction["scores"][i]), 5),
        }
        if "masks" in prediction:
            det["mask"] = encode_mask((prediction["masks"][i, 0] >= 0.5).cpu().numpy())
        if "keypoints" in prediction:
            det["keypoints"] = [[round(float(v), 2) for v in kp] for kp in prediction["keypoints"][i]]
        dets.append(det)
    return {"image": str(image_path), "height": size[0], "width": size[1], "detections": dets}


def cmd_predict(args) -> int:
    from maskzoo.data.coco import load_image  # Pillow: see the top
    from maskzoo.viz import draw_predictions

    _runtime(args)
    device = _device(args.device)
    overrides = _parse_overrides(args.set)
    model = load(args.checkpoint, **overrides).to(device)
    names = getattr(model, "class_names", None)
    model = fuse_for_inference(model, dtype=DTYPES[args.dtype], policy=args.precision_policy)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in args.images:
        image = load_image(path)
        with torch.inference_mode():
            pred = {k: v.cpu() for k, v in model([image.to(device)])[0].items()}
        keep = pred["scores"] >= args.score_thresh
        pred = {k: v[keep] for k, v in pred.items()}
        stem = Path(path).stem
        picture = draw_predictions(image, pred, names, score_thresh=args.score_thresh)
        write_atomic(out / f"{stem}.png", lambda f, picture=picture: picture.save(f, format="PNG"))
        record = predictions_to_json(pred, names, path, tuple(image.shape[-2:]))
        write_atomic(out / f"{stem}.json", json.dumps(record))
        print(f"{path}: {len(record['detections'])} detections -> {out / stem}.png, .json")
    return 0


# --dtype of predict and eval: the layers' dtype (box geometry, scores and masks stay float32).
DTYPES = {"float32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _add_dtype_flags(p, help: str) -> None:
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help=help)
    p.add_argument("--precision-policy", choices=POLICIES, default="network",
                   help="with --dtype bf16 / fp16: which layers take that dtype (network: all but the "
                        "box and score layers; heads: the mask head and box fc1 only, detections "
                        "closer to float32's; maskzoo.modeling.precision)")


def cmd_export(args) -> int:
    import maskzoo.export
    from maskzoo.zoo import build

    overrides = _parse_overrides(args.set)
    if args.checkpoint is not None:
        model = load(args.checkpoint, name=args.model, **overrides)
    elif args.model is not None:
        model = build(args.model, **overrides)  # random weights: for trying the tool chain
    else:
        raise ValueError("give --model, --checkpoint or both")
    model.eval()
    start = time.perf_counter()
    if args.format == "pt2":
        path = maskzoo.export.to_pt2(model, args.out)
    else:
        path = maskzoo.export.to_onnx(model, args.out)
    print(f"wrote {path} ({args.format}, model {model.config.name}, {time.perf_counter() - start:.0f} s)")
    return 0


def cmd_convert(args) -> int:
    model = load(args.input, name=args.model)
    save(model, args.output)
    known = published.recognise(args.input)
    origin = f"; {known.source} {known.description}, COCO {known.ap_text()} AP" if known else ""
    print(f"wrote {args.output} (model {model.config.name}{origin})")
    return 0


def cmd_demo(args) -> int:
    from maskzoo.demo import DemoConfig, run_demo  # Pillow: see the top

    _runtime(args)
    given = (
        ("iters", args.iters),
        ("train_images", args.train),
        ("val_images", args.val),
        ("seed", args.seed),
    )
    cfg = dataclasses.replace(DemoConfig(), **{k: v for k, v in given if v is not None})
    run_demo(cfg, args.out, device=args.device, threads=args.threads)
    return 0


# ----------------------------------------------------------------------------------------------------
# Parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maskzoo",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="registered models and their configs")
    p.add_argument("--names-only", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("shapes", help="write the synthetic shapes data set (COCO format)")
    p.add_argument("out")
    p.add_argument("--train", type=int, default=1000, help="training images")
    p.add_argument("--val", type=int, default=100, help="held-out images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument("--max-shapes", type=int, default=4)
    p.add_argument("--min-radius", type=float, default=None, help="default: 0.08 * size")
    p.add_argument("--max-radius", type=float, default=None, help="default: 0.22 * size")
    p.set_defaults(func=cmd_shapes)

    p = sub.add_parser("train", help="train a model (under torchrun: distributed)")
    p.add_argument("--model", required=True, help="registry name (see maskzoo list)")
    p.add_argument("--data", required=True)
    p.add_argument("--images", default=None, help="image folder of --data")
    p.add_argument("--val", default=None, help="evaluate on this data set after training")
    p.add_argument("--val-images", default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--iters", type=int, default=90_000)
    p.add_argument("--batch", type=int, default=2, help="images per process")
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=1000, help="linear warm-up iterations")
    p.add_argument(
        "--steps",
        type=int,
        nargs="*",
        default=None,
        help="iterations where the lr drops by --gamma (default: 2/3 and 8/9 of --iters)",
    )
    p.add_argument("--gamma", type=float, default=0.1)
    p.add_argument("--clip-grad", type=float, default=None, help="max gradient L2 norm")
    p.add_argument("--amp", action="store_true", help="float16 autocast on CUDA")
    p.add_argument("--checkpoint-period", type=int, default=5000)
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--weights", default=None, help="initial weights (a maskzoo checkpoint)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="data-loading processes per training process")
    p.add_argument("--device", default=None, help="cpu, cuda (default: cuda when present)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="model config override (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_runtime_flag(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="COCO box/mask/keypoint AP of a checkpoint (torchrun: sharded)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--images", default=None)
    p.add_argument("--out", default=None, help="default: eval/ next to the checkpoint")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default=None)
    _add_dtype_flags(p, "layer dtype, as predict's: the AP of a bf16 / fp16 deployment")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.add_argument("--quiet", action="store_true")
    _add_runtime_flag(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="draw and save the detections of images")
    p.add_argument("images", nargs="+")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--score-thresh", type=float, default=0.5)
    p.add_argument("--device", default=None)
    _add_dtype_flags(p, "layer dtype: bf16 (CPU with AVX512-BF16 / AMX, or CUDA), fp16 (CUDA); "
                        "boxes, scores and masks stay float32")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    _add_runtime_flag(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="AOTInductor package (.pt2) or standard ONNX file of a model")
    p.add_argument("--model", default=None, help="registry name; alone: random weights")
    p.add_argument("--checkpoint", default=None, help="weights (alone: the model the file names)")
    p.add_argument("--format", required=True, choices=["pt2", "onnx"])
    p.add_argument("--out", required=True)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="model config override")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("convert", help="torchvision detection weights -> maskzoo checkpoint")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--model", default=None, help="maskzoo model name (default: detected)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        "demo", help="the main job: shapes set, train r18_fpn_demo on the CPU, COCO AP, pictures"
    )
    p.add_argument("--out", default="out/demo")
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--train", type=int, default=None, help="training images")
    p.add_argument("--val", type=int, default=None, help="held-out images")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None, help="default: cpu (the demo is made for it)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    _add_runtime_flag(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, KeyError, TypeError, FloatingPointError) as err:
        # Expected failures (bad paths, bad data, bad overrides, diverged training): a message,
        # not a traceback. Set MASKZOO_TRACEBACK=1 to see where it came from.
        if os.environ.get("MASKZOO_TRACEBACK"):
            raise
        print(f"maskzoo {args.command}: error: {err}", file=sys.stderr)
        return 2
