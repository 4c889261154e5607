"""maskzoo on the GPU in under a minute: does the whole model run there, and agree with the CPU?

Checks, one PASS/FAIL line each:
  1. r50_fpn inference on two images (480 x 640 and 600 x 500) on the GPU: finite outputs on the
     GPU, at least one detection per image.
  2. The same weights on the CPU: per image the same number of detections, each matched to one of
     the other device's with the same label and boxes within 1e-2 px (the order is reported, not
     required: near-equal scores may swap places), mask IoU (masks thresholded at 0.5, pooled over
     the matched pairs) above 0.98. TF32 is off for this: it is an fp32 comparison.
  3. r18_fpn, three SGD steps in fp32 and three with AMP (float16 autocast and a GradScaler, as
     maskzoo's training loop runs it): every loss finite.

The r50_fpn weights are torchvision's Mask R-CNN layout with random weights, frozen batch norm
statistics and peaked class scores (benchmarks/bench_models.py), loaded with
``maskzoo.build("r50_fpn", checkpoint=...)``: well separated scores, so that "the same
detections" is a fair demand of two devices.

    PYTHONPATH=. python tools/gpu_smoke.py --json smoke.json    # from the repository root
    PYTHONPATH=. python tools/gpu_smoke.py --device cpu --tiny  # the CPU dry run: r18_fpn, 64 px

Exit status 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import tempfile
import time
import traceback

import torch

import maskzoo

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
BOX_TOL_PX = 1e-2
MASK_IOU_MIN = 0.98

sys.path.insert(0, BENCHMARKS)
from bench_models_cuda import TINY_OVERRIDES as TINY  # noqa: E402  (the dry run's small model settings)
from bench_models_cuda import agreement, training_targets  # noqa: E402


class Checks:
    def __init__(self, json_path=None, **header):
        self.results, self.json_path, self.header = [], json_path, header

    def record(self, name: str, ok: bool, detail: str) -> None:
        self.results.append({"check": name, "ok": bool(ok), "detail": detail})
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
        if self.json_path:  # after every check: a run stopped at its time limit keeps what it found
            with open(self.json_path, "w") as f:
                json.dump({**self.header, "checks": self.results}, f, indent=1)

    def run(self, name: str, fn) -> None:
        """Runs fn() -> (ok, detail); an exception is a failure with its message as the detail."""
        start = time.perf_counter()
        try:
            ok, detail = fn()
        except Exception as err:  # noqa: BLE001  (a smoke test reports every check)
            traceback.print_exc()  # into the log: the next session fixes from it
            ok, detail = False, f"{type(err).__name__}: {err}"
        self.record(name, ok, f"{detail} ({time.perf_counter() - start:.1f} s)")


def inference_model(tiny: bool):
    """The eval-mode model of checks 1 and 2, on the CPU."""
    if tiny:
        torch.manual_seed(0)
        return maskzoo.build("r18_fpn", box_score_thresh=0.0, **TINY).eval()
    from bench_models import torchvision_model

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "maskrcnn_resnet50_fpn.pth")
        torch.save(torchvision_model().state_dict(), path)
        return maskzoo.build("r50_fpn", checkpoint=path, box_score_thresh=0.0).eval()


def images(tiny: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    sizes = [(48, 64), (64, 56)] if tiny else [(480, 640), (600, 500)]
    out = []
    for h, w in sizes:
        # A smooth background with a few solid rectangles: something for the detector to find.
        yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
        img = torch.stack([0.3 + 0.4 * xx, 0.5 - 0.3 * yy, 0.4 + 0.2 * xx * yy])
        for _ in range(4):
            x1, y1 = (
                int(torch.randint(0, w // 2, (1,), generator=g)),
                int(torch.randint(0, h // 2, (1,), generator=g)),
            )
            img[:, y1 : y1 + h // 3, x1 : x1 + w // 4] = torch.rand(3, 1, 1, generator=g)
        out.append((img + 0.03 * torch.randn(3, h, w, generator=g)).clamp(0, 1))
    return out


def check_outputs_on(outputs, device) -> tuple[bool, str]:
    counts = [int(o["boxes"].shape[0]) for o in outputs]
    on_device = all(v.device.type == device.type for o in outputs for v in o.values())
    finite = all(torch.isfinite(o[k].float()).all() for o in outputs for k in ("boxes", "scores", "masks"))
    return (
        on_device and finite and min(counts) > 0,
        f"detections {counts}, on {device.type}: {on_device}, finite: {finite}",
    )


def cpu_gpu_agreement(cpu_outputs, gpu_outputs) -> tuple[bool, str]:
    a = agreement(cpu_outputs, gpu_outputs, masks=True)
    ok = a["equal"] and a["max_box_diff_px"] <= BOX_TOL_PX and a["mask_iou"] > MASK_IOU_MIN
    return ok, (
        f"detections (CPU, GPU) {a['detections']}, unmatched {a['unmatched']}, same order {a['same_order']}, "
        f"max box diff {a['max_box_diff_px']:.2e} px, mask IoU {a['mask_iou']:.4f}"
    )


def training_batch(size: int, device, g):
    """Two random images and their targets (three boxes with box-shaped masks each)."""
    images_ = [torch.rand(3, size, size, generator=g).to(device) for _ in range(2)]
    return images_, training_targets(2, size, device, g)


def train_steps(device, tiny: bool, amp: bool) -> tuple[bool, str]:
    torch.manual_seed(0)
    steps = 1 if tiny else 3
    size = TINY["min_size"] if tiny else 512
    model = maskzoo.build("r18_fpn", **(TINY if tiny else {})).to(device).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    images_, targets = training_batch(size, device, torch.Generator().manual_seed(1))
    totals, finite = [], True
    for _ in range(steps):
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            losses = model(images_, targets)
        total = sum(losses.values())
        finite &= all(math.isfinite(float(v.detach())) for v in losses.values())
        totals.append(float(total.detach()))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()
    per_step = ", ".join(f"{t:.4f}" for t in totals)
    return finite, f"total loss per step {per_step}; all losses finite: {finite}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="r18_fpn at 64 px (the CPU dry run)")
    parser.add_argument("--json", help="write the checks here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_smoke: no CUDA device", file=sys.stderr)
        return 1
    # fp32 agreement is asked of the two devices: no TF32 convolutions or matrix products.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    checks = Checks(args.json, device=args.device, tiny=args.tiny)
    name = "r18_fpn (tiny)" if args.tiny else "r50_fpn"
    state = {}

    def build():
        state["cpu"] = inference_model(args.tiny)
        state["gpu"] = copy.deepcopy(state["cpu"]).to(device)
        return True, f"{name}, {sum(p.numel() for p in state['cpu'].parameters()) / 1e6:.1f} M parameters"

    def gpu_inference():
        with torch.no_grad():
            state["gpu_out"] = state["gpu"]([img.to(device) for img in images(args.tiny)])
        return check_outputs_on(state["gpu_out"], device)

    def cpu_agreement():
        with torch.no_grad():
            cpu_out = state["cpu"](images(args.tiny))
        return cpu_gpu_agreement(cpu_out, state["gpu_out"])

    checks.run(f"build {name}, a copy on {device.type}", build)
    checks.run(f"{name} inference on two images on {device.type}", gpu_inference)
    checks.run(f"{name} CPU vs {device.type} on the same weights", cpu_agreement)
    state.clear()
    steps = "one training step (tiny)" if args.tiny else "three training steps"
    checks.run(f"r18_fpn {steps} fp32", lambda: train_steps(device, args.tiny, amp=False))
    if device.type == "cuda":
        checks.run(f"r18_fpn {steps} AMP float16", lambda: train_steps(device, args.tiny, amp=True))
    else:
        print(f"SKIP r18_fpn {steps} AMP float16: AMP is CUDA only")
    failed = [r["check"] for r in checks.results if not r["ok"]]
    print(f"gpu_smoke: {len(checks.results) - len(failed)}/{len(checks.results)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
