"""Whole-model speed: maskzoo r50_fpn vs torchvision's maskrcnn_resnet50_fpn, same weights, same image.

Inference: one 800 x 1216 image (no resizing at the default 800 / 1333), eval mode, 100
detections, on the CPU, with per-stage times taken by timing hooks on the corresponding modules
and functions: backbone+FPN, RPN head (its convolutions), RPN proposals (the rest of the RPN:
anchors, decoding, top-k, NMS), RoI pooling, box head (its FC layers), box post-processing
(softmax to detections, NMS included), mask head, mask pasting. A stage nested in another is
subtracted from it.
Training: one SGD step (forward, backward, update) on 2 images of 512 x 512 with 3 objects each,
maskzoo as built and with its parameters stored channels_last (``model.to(memory_format=
torch.channels_last)``, which a training script applies once).

torchvision's model is built as for its COCO_V1 weights (frozen batch norm, eps 0, 3 trainable
backbone stages) with random weights, saved as a plain state_dict and loaded into maskzoo with
``maskzoo.build("r50_fpn", checkpoint=...)``, so both run the same weights. maskzoo runs as a
user runs it for inference: ``fuse_for_inference`` (frozen BN folded into convolutions,
channels_last), plus unfused for reference.

Allocator: ``--allocator kept`` keeps freed memory in the process (see _common.keep_freed_memory);
``--allocator both`` (default) runs each setting in its own process, as the two cannot be mixed
in one. The machine is shared and noisy: read the ratios (same process, interleaved runs).

    python benchmarks/bench_models.py                     # both allocators, inference + training
    python benchmarks/bench_models.py --allocator kept --repeats 5 --skip-training
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _common import RESULTS_DIR, keep_freed_memory  # noqa: E402
from _frozen_norms import randomize_frozen_norms  # noqa: E402

STAGES = ["backbone+FPN", "RPN head", "RPN proposals", "RoI pooling", "box head", "box post-processing",
          "mask head", "mask pasting"]
ROIOPS_STAGES = ("RPN proposals", "RoI pooling", "box post-processing", "mask pasting")


class StageTimer:
    """Accumulates wall time per stage from module hooks and wrapped functions (nesting-aware: a
    timed module or function inside another, e.g. the RPN's head inside the RPN, is counted once,
    under its own stage)."""

    def __init__(self):
        self.times = defaultdict(float)
        self._open = {}
        self._active = []  # stages open now, outermost first
        self._handles = []
        self._patches = []

    def module(self, module, stage):
        def pre(mod, args):
            self._open[id(mod)] = time.perf_counter()
            self._active.append(stage)

        def post(mod, args, out):
            self._active.pop()
            self._count(stage, time.perf_counter() - self._open.pop(id(mod)))

        self._handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def function(self, owner, name, stage):
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            self._active.append(stage)
            try:
                return original(*args, **kwargs)
            finally:
                self._active.pop()
                self._count(stage, time.perf_counter() - start)

        setattr(owner, name, timed)
        self._patches.append((owner, name, original))

    def _count(self, stage, elapsed):
        self.times[stage] += elapsed
        if self._active:  # nested: not also counted in the enclosing stage
            self.times[self._active[-1]] -= elapsed

    def remove(self):
        for h in self._handles:
            h.remove()
        for owner, name, original in reversed(self._patches):
            setattr(owner, name, original)


def torchvision_model(**kwargs):
    from torchvision.models.detection._utils import overwrite_eps
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.models.detection.mask_rcnn import MaskRCNN
    from torchvision.models.resnet import resnet50
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.manual_seed(0)
    model = MaskRCNN(
        _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), 3), num_classes=91, **kwargs
    )
    overwrite_eps(model, 0.0)
    # Non-trivial frozen batch norms (torchvision initialises them to identity).
    randomize_frozen_norms(model, FrozenBatchNorm2d, seed=1)
    with torch.no_grad():
        # Peaked class scores: distinct, so "equal outputs" is a meaningful comparison.
        model.roi_heads.box_predictor.cls_score.weight.mul_(40.0)
    return model


@contextmanager
def timed_stages(model, timer, poolers, pasting, box_postprocess):
    """Times the stages of a Mask R-CNN (torchvision's or maskzoo's: the same attribute names except
    the poolers). pasting, box_postprocess: (owner, function name) of the two post-processing calls."""
    rh = model.roi_heads
    timer.module(model.backbone, "backbone+FPN")
    timer.module(model.rpn, "RPN proposals")
    timer.module(model.rpn.head, "RPN head")
    for pooler in poolers:
        timer.module(pooler, "RoI pooling")
    for m in (rh.box_head, rh.box_predictor):
        timer.module(m, "box head")
    for m in (rh.mask_head, rh.mask_predictor):
        timer.module(m, "mask head")
    timer.function(*pasting, "mask pasting")
    timer.function(*box_postprocess, "box post-processing")
    try:
        yield
    finally:
        timer.remove()


def timed_torchvision(model, timer):
    import torchvision.models.detection.transform as tv_transform

    rh = model.roi_heads
    return timed_stages(model, timer, (rh.box_roi_pool, rh.mask_roi_pool),
                        (tv_transform, "paste_masks_in_image"), (rh, "postprocess_detections"))


def timed_maskzoo(model, timer):
    import maskzoo.modeling.roi_heads as mz_roi_heads
    import roiops

    rh = model.roi_heads
    return timed_stages(model, timer, (rh.box_pooler, rh.mask_pooler), (roiops, "paste_masks"),
                        (mz_roi_heads, "box_inference"))


def run_inference(model, image, instrument):
    timer = StageTimer()
    with instrument(model, timer), torch.no_grad():
        start = time.perf_counter()
        out = model([image])
        total = time.perf_counter() - start
    return total, dict(timer.times), out


def compare_outputs(a, b):
    n = min(a["boxes"].shape[0], b["boxes"].shape[0])
    return {
        "detections": (a["boxes"].shape[0], b["boxes"].shape[0]),
        "max box diff (px)": float((a["boxes"][:n] - b["boxes"][:n]).abs().max()) if n else 0.0,
        "max score diff": float((a["scores"][:n] - b["scores"][:n]).abs().max()) if n else 0.0,
        "labels equal": bool(torch.equal(a["labels"][:n], b["labels"][:n])),
    }


def inference(args):
    import maskzoo
    from maskzoo.modeling.fuse import fuse_for_inference

    tv = torchvision_model(box_score_thresh=0.0, box_detections_per_img=100).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "maskrcnn_resnet50_fpn.pth")
        torch.save(tv.state_dict(), path)
        plain = maskzoo.build(
            "r50_fpn", checkpoint=path, box_score_thresh=0.0, box_detections_per_img=100
        ).eval()
    fused = fuse_for_inference(copy.deepcopy(plain))
    image = torch.rand(3, 800, 1216, generator=torch.Generator().manual_seed(0))

    variants = {
        "torchvision": (tv, timed_torchvision),
        "maskzoo": (plain, timed_maskzoo),
        "maskzoo fused": (fused, timed_maskzoo),
    }
    totals = defaultdict(list)
    stages = defaultdict(lambda: defaultdict(list))
    outputs = {}
    for name, (model, instrument) in variants.items():  # warm-up
        outputs[name] = run_inference(model, image, instrument)[2][0]
    for _ in range(args.repeats):  # interleaved, so that load changes hit every variant alike
        for name, (model, instrument) in variants.items():
            total, times, _ = run_inference(model, image, instrument)
            totals[name].append(total)
            for stage, t in times.items():
                stages[name][stage].append(t)
    return totals, stages, {n: compare_outputs(outputs["torchvision"], outputs[n]) for n in variants}


def torchvision_v2_model(**kwargs):
    """torchvision's maskrcnn_resnet50_fpn_v2 with random weights and non-trivial batch norm statistics."""
    from torch import nn
    from torchvision.models.detection.mask_rcnn import maskrcnn_resnet50_fpn_v2

    torch.manual_seed(0)
    model = maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91, **kwargs)
    randomize_frozen_norms(model, nn.BatchNorm2d, seed=1)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.mul_(40.0)
    return model


def extra_models(args):
    """End-to-end inference rows beyond r50_fpn: r50_fpn_v2 against torchvision's v2 (same weights,
    same image) and maskzoo's r50_c4 against its r50_fpn (Detectron2 reports C4 at about 2.5x
    the FPN model's time on a V100: res5 runs on each of the 1000 RoIs)."""
    import maskzoo
    from maskzoo.modeling.fuse import fuse_for_inference

    image = torch.rand(3, 800, 1216, generator=torch.Generator().manual_seed(0))
    tv2 = torchvision_v2_model(box_score_thresh=0.0, box_detections_per_img=100).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "maskrcnn_resnet50_fpn_v2.pth")
        torch.save(tv2.state_dict(), path)
        v2 = maskzoo.build("r50_fpn_v2", checkpoint=path, box_score_thresh=0.0, box_detections_per_img=100)
    v2 = v2.eval()
    torch.manual_seed(0)
    fpn = maskzoo.build("r50_fpn", box_score_thresh=0.0, box_detections_per_img=100).eval()
    torch.manual_seed(0)
    c4 = maskzoo.build("r50_c4", box_score_thresh=0.0, box_detections_per_img=100).eval()
    models = {
        "torchvision v2": tv2,
        "maskzoo r50_fpn_v2": v2,
        "maskzoo r50_fpn_v2 fused": fuse_for_inference(copy.deepcopy(v2)),
        "maskzoo r50_fpn fused": fuse_for_inference(fpn),
        "maskzoo r50_c4 fused": fuse_for_inference(c4),
    }
    outputs, totals = {}, defaultdict(list)
    with torch.no_grad():
        for name, model in models.items():  # warm-up
            outputs[name] = model([image])[0]
        for _ in range(args.repeats):
            for name, model in models.items():
                start = time.perf_counter()
                model([image])
                totals[name].append(time.perf_counter() - start)
    med = {n: statistics.median(v) for n, v in totals.items()}
    equal = {n: compare_outputs(outputs["torchvision v2"], outputs[n]) for n in list(models)[1:3]}
    return med, equal


def _targets(num_images, size, generator):
    targets = []
    for _ in range(num_images):
        xy = torch.rand(3, 2, generator=generator) * (size * 0.6)
        wh = 40 + torch.rand(3, 2, generator=generator) * (size * 0.3)
        boxes = torch.cat([xy, xy + wh], dim=1)
        masks = torch.zeros(3, size, size, dtype=torch.uint8)
        for j, (x1, y1, x2, y2) in enumerate(boxes.round().int().tolist()):
            masks[j, y1:y2, x1:x2] = 1
        targets.append({"boxes": boxes, "labels": torch.tensor([1, 5, 17]), "masks": masks})
    return targets


def training(args):
    import maskzoo

    size = 512
    tv = torchvision_model(min_size=size, max_size=size).train()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "maskrcnn_resnet50_fpn.pth")
        torch.save(tv.state_dict(), path)
        mz = maskzoo.build("r50_fpn", checkpoint=path, min_size=size, max_size=size).train()
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, size, size, generator=g) for _ in range(2)]
    targets = _targets(2, size, g)
    # channels_last: NHWC activations, oneDNN's fastest convolution layout (also in the backward).
    models = {
        "torchvision": tv,
        "maskzoo": mz,
        "maskzoo channels_last": copy.deepcopy(mz).to(memory_format=torch.channels_last),
    }
    optimizers = {
        n: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
        for n, m in models.items()
    }
    times, losses = defaultdict(list), {}

    def step(name):
        torch.manual_seed(0)  # same sampling in both where their RNG use agrees
        start = time.perf_counter()
        loss_dict = models[name](images, targets)
        loss = sum(loss_dict.values())
        optimizers[name].zero_grad()
        loss.backward()
        optimizers[name].step()
        return time.perf_counter() - start, {k: float(v.detach()) for k, v in loss_dict.items()}

    for name in models:
        losses[name] = step(name)[1]  # warm-up; losses of the identical first step
    for _ in range(args.repeats):
        for name in models:
            times[name].append(step(name)[0])
    return times, losses


def run_one(args):
    if args.allocator == "kept":
        keep_freed_memory()
    torch.set_num_threads(args.threads)
    result = {"allocator": args.allocator, "threads": args.threads, "torch": torch.__version__}
    print(
        f"\n## bench_models  (allocator={args.allocator}, {args.threads} threads, median of {args.repeats})"
    )
    if not args.skip_inference:
        totals, stages, equal = inference(args)
        med = {n: statistics.median(v) for n, v in totals.items()}
        print("\nInference, 1 image 800x1216, 100 detections (seconds):")
        print(f"| {'stage':<22} | torchvision | maskzoo | maskzoo fused | speed-up (fused) |")
        print(f"|{'-' * 24}|-------------|---------|---------------|------------------|")
        rows = {}
        for stage in STAGES:
            m = {n: statistics.median(stages[n][stage]) if stages[n][stage] else 0.0 for n in totals}
            rows[stage] = m
            ratio = m["torchvision"] / m["maskzoo fused"] if m["maskzoo fused"] > 0 else float("nan")
            print(
                f"| {stage:<22} | {m['torchvision']:>11.4f} | {m['maskzoo']:>7.4f} | "
                f"{m['maskzoo fused']:>13.4f} | {ratio:>15.2f}x |"
            )
        own = {n: sum(rows[s][n] for s in ROIOPS_STAGES) for n in totals}
        print(
            f"| {'roiops stages (sum)':<22} | {own['torchvision']:>11.4f} | {own['maskzoo']:>7.4f} | "
            f"{own['maskzoo fused']:>13.4f} | {own['torchvision'] / own['maskzoo fused']:>15.2f}x |"
        )
        print(
            f"| {'END TO END':<22} | {med['torchvision']:>11.4f} | {med['maskzoo']:>7.4f} | "
            f"{med['maskzoo fused']:>13.4f} | {med['torchvision'] / med['maskzoo fused']:>15.2f}x |"
        )
        print(f"(unfused maskzoo end to end: {med['torchvision'] / med['maskzoo']:.2f}x)")
        for n, e in equal.items():
            print(f"  outputs {n} vs torchvision: {e}")
        result["inference"] = {"total_s": med, "stages_s": rows, "roiops_stages_s": own, "outputs": equal}
    if not args.skip_extra_models:
        med, equal = extra_models(args)
        print("\nInference end to end, 1 image 800x1216 (seconds):")
        for name, t in med.items():
            print(f"  {name:<26} {t:8.3f}")
        tv2, fused2 = med["torchvision v2"], med["maskzoo r50_fpn_v2 fused"]
        print(
            f"  r50_fpn_v2 speed-up over torchvision v2: fused {tv2 / fused2:.2f}x, "
            f"unfused {tv2 / med['maskzoo r50_fpn_v2']:.2f}x"
        )
        c4_ratio = med["maskzoo r50_c4 fused"] / med["maskzoo r50_fpn fused"]
        print(f"  r50_c4 / r50_fpn time (both fused): {c4_ratio:.2f}x")
        for n, e in equal.items():
            print(f"  outputs {n} vs torchvision v2: {e}")
        result["extra_models"] = {"total_s": med, "outputs": equal}
    if not args.skip_training:
        times, losses = training(args)
        med = {n: statistics.median(v) for n, v in times.items()}
        print("\nTraining step, 2 images 512x512 (seconds):")
        for name in ("maskzoo", "maskzoo channels_last"):
            print(
                f"  torchvision {med['torchvision']:.3f}  {name} {med[name]:.3f}  "
                f"speed-up {med['torchvision'] / med[name]:.2f}x"
            )
        for n, lo in losses.items():
            print(f"  first-step losses {n}: " + ", ".join(f"{k}={v:.5f}" for k, v in sorted(lo.items())))
        result["training"] = {"step_s": med, "losses": losses}
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"models_{args.allocator}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"(written to {os.path.relpath(path)})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allocator", choices=["default", "kept", "both"], default="both")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-inference", action="store_true")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-extra-models", action="store_true", help="no r50_fpn_v2 / r50_c4 rows")
    parser.add_argument("--quick", action="store_true", help="same as --repeats 1")
    args, _ = parser.parse_known_args()
    if args.quick:
        args.repeats = 1
    if args.allocator != "both":
        return run_one(args)
    for allocator in ("default", "kept"):  # each in its own process: mallopt cannot be undone
        forwarded = [a for a in sys.argv[1:] if not a.startswith("--allocator")]
        subprocess.check_call(
            [sys.executable, os.path.abspath(__file__), "--allocator", allocator, *forwarded]
        )


if __name__ == "__main__":
    main()
