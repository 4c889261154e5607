"""roiops' CUDA kernels against torchvision's CUDA ops, same process, same GPU.

Cases: RoIAlign box head (features [2, 256, 200, 304], 1024 RoIs, 7x7, sampling_ratio 2, aligned)
and mask head (100 RoIs, 14x14), forward, forward+backward and the deterministic backward
(torch.use_deterministic_algorithms; torchvision then runs its pure-PyTorch path), NCHW and
channels_last; the 4-level FPN pooler with 1000 RoIs; roi_pool; nms of 1k-100k clustered boxes;
batched_nms (20k boxes, 80 classes); soft_nms (roiops only); pasting 100 masks into 800 x 1216.

Timing: a few warm-up calls, then one CUDA event pair around each call, and the median (the
number of calls fits --seconds per case). Where a case misses its target speed-up, a
torch.profiler table of the top kernels of both sides is printed and kept in the JSON.

    python benchmarks/bench_cuda.py --json out/ops.json
    python benchmarks/bench_cuda.py --device cpu --tiny      # the CPU dry run: tiny shapes, no targets

Without a GPU (or without roiops' CUDA kernels) and no --device cpu: says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from functools import partial

import torch
import torchvision

import roiops


@dataclass
class Case:
    name: str
    ours_ms: float
    theirs_ms: float | None  # None: torchvision has no counterpart
    target: float | None  # the speed-up asked for (None: report only)
    profile: str = ""  # top kernels of both sides, where the target was missed
    speedup: float | None = field(init=False)
    met: bool | None = field(init=False)

    def __post_init__(self):
        self.speedup = None if self.theirs_ms is None else self.theirs_ms / self.ours_ms
        self.met = None if self.target is None or self.speedup is None else self.speedup >= self.target


@dataclass(frozen=True)
class Shapes:
    features: tuple[int, int, int, int]  # the box/mask head's map: [N, C, H, W] at stride 4
    box_rois: int
    mask_rois: int
    fpn_sizes: tuple[tuple[int, int], ...]  # the pooler's 4 levels, strides 4 to 32
    fpn_rois_per_image: int
    image: tuple[int, int]
    nms_sizes: tuple[int, ...]
    batched_nms_boxes: int
    soft_nms_sizes: tuple[int, ...]
    masks: int


FULL = Shapes(
    (2, 256, 200, 304),
    1024,
    100,
    ((200, 304), (100, 152), (50, 76), (25, 38)),
    500,
    (800, 1216),
    (1000, 5000, 20000, 100000),
    20000,
    (1000, 5000),
    100,
)
TINY = Shapes(
    (1, 8, 24, 32), 32, 8, ((24, 32), (12, 16), (6, 8), (3, 4)), 16, (96, 128), (200,), 200, (100,), 8
)


class Timer:
    """Median milliseconds per call: CUDA events on the GPU, perf_counter on the CPU."""

    def __init__(self, device: torch.device, seconds: float, warmup: int = 3, min_reps: int = 5):
        self.device, self.seconds, self.warmup, self.min_reps = device, seconds, warmup, min_reps

    def __call__(self, fn) -> float:
        for _ in range(self.warmup):  # allocator, lazy initialisation, cuDNN/cuBLAS handles
            fn()
        reps = self.min_reps
        if self.seconds > 0:  # as many calls as fit the time, from one more call's duration
            self._sync()
            start = time.perf_counter()
            fn()
            self._sync()
            reps = int(min(200, max(reps, self.seconds / max(time.perf_counter() - start, 1e-6))))
        if self.device.type != "cuda":
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
            return statistics.median(times)
        events = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)
        ]
        for begin, end in events:
            begin.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        return statistics.median(b.elapsed_time(e) for b, e in events)

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def profile_table(fn, device: torch.device, rows: int = 8) -> str:
    """torch.profiler's table of the top kernels (self device time) over 5 calls of fn; a profiler
    that fails (no CUPTI in a VM, say) gives its error instead of the table, not an exception."""
    try:
        return _profile_table(fn, device, rows)
    except Exception as err:  # noqa: BLE001  (the timing figures stand without the profile)
        return f"(profiler failed: {type(err).__name__}: {err})"


def _profile_table(fn, device: torch.device, rows: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(5):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    averages = prof.key_averages()
    # torch >= 2.4 names it device time; older releases only cuda time.
    keys = (
        ("self_device_time_total", "self_cuda_time_total")
        if device.type == "cuda"
        else ("self_cpu_time_total",)
    )
    for key in keys:
        try:
            return averages.table(sort_by=key, row_limit=rows)
        except (AttributeError, KeyError, ValueError):
            continue
    return averages.table(row_limit=rows)


class Bench:
    def __init__(self, device, seconds: float, tiny: bool, profile_misses: bool, json_path=None):
        self.device, self.tiny, self.profile_misses = device, tiny, profile_misses
        self.time = Timer(device, seconds) if not tiny else Timer(device, 0.0, warmup=1, min_reps=1)
        self.cases: list[Case] = []
        self.errors: list[str] = []
        self.json_path = json_path
        self.device_name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"

    def save(self):
        """Rewrites the JSON after every case: a run stopped at its time limit keeps what it measured."""
        if self.json_path:
            with open(self.json_path, "w") as f:
                json.dump(
                    {
                        "device": self.device_name,
                        "torch": torch.__version__,
                        "torchvision": torchvision.__version__,
                        "cases": [asdict(c) for c in self.cases],
                        "errors": self.errors,
                    },
                    f,
                    indent=1,
                )

    def case(self, name, ours, theirs=None, target=None):
        try:
            result = Case(
                name,
                self.time(ours),
                None if theirs is None else self.time(theirs),
                None if self.tiny else target,
            )
            if result.met is False and self.profile_misses:
                result.profile = (
                    "roiops:\n"
                    + profile_table(ours, self.device)
                    + "\ntorchvision:\n"
                    + profile_table(theirs, self.device)
                )
        except Exception as err:  # noqa: BLE001  (one broken case must not hide the others)
            self.errors.append(f"{name}: {type(err).__name__}: {err}")
            print(f"ERROR {name}: {type(err).__name__}: {err}", flush=True)
            traceback.print_exc()
            self.save()
            return
        self.cases.append(result)
        self.save()
        theirs_ms = "-" if result.theirs_ms is None else f"{result.theirs_ms:.3f}"
        speedup = "-" if result.speedup is None else f"{result.speedup:.2f}x"
        print(f"{name:<58} {result.ours_ms:9.3f} {theirs_ms:>9} {speedup:>7}", flush=True)
        if result.profile:
            print(result.profile, flush=True)

    # ---- inputs -------------------------------------------------------------------------------
    def features(self, shape, channels_last, g):
        x = torch.randn(shape, generator=g).to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    def rois(self, k, batch, height, width, scale, g):
        xy = torch.rand(k, 2, generator=g) * torch.tensor([width, height]) / scale
        wh = torch.rand(k, 2, generator=g) * torch.tensor([width, height]) / scale / 4 + 4
        b = torch.randint(0, batch, (k, 1), generator=g).float()
        return torch.cat([b, xy, xy + wh], dim=1).to(self.device)

    def clustered_boxes(self, n, g):
        # Boxes jittered around n / 20 centres, the way a detector's proposals cluster on objects.
        centres = torch.rand(max(n // 20, 1), 2, generator=g) * 1000
        pick = torch.randint(0, centres.size(0), (n,), generator=g)
        xy = centres[pick] + torch.randn(n, 2, generator=g) * 8
        wh = torch.rand(n, 2, generator=g) * 60 + 20
        return torch.cat([xy, xy + wh], dim=1).to(self.device), torch.rand(n, generator=g).to(self.device)


def _align(op, x, rois, out):
    return op(x, rois, out, 0.25, 2, True)


def _align_backward(op, x, rois, out, grad, deterministic=False):
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(deterministic)
    try:
        return torch.autograd.grad(op(x, rois, out, 0.25, 2, True), x, grad)
    finally:
        torch.use_deterministic_algorithms(before)


def roi_align_cases(b: Bench, s: Shapes, g):
    ours, theirs = roiops.roi_align, torchvision.ops.roi_align
    for head, k, out in (("box head", s.box_rois, 7), ("mask head", s.mask_rois, 14)):
        box_head = head == "box head"
        for channels_last in (False, True):
            x = b.features(s.features, channels_last, g)
            rois = b.rois(k, s.features[0], s.features[2], s.features[3], 0.25, g)
            fmt = "channels_last" if channels_last else "NCHW"
            # The targets are set on the box head in NCHW, the layout torchvision's kernel reads.
            targeted = box_head and not channels_last
            b.case(
                f"roi_align {head} fwd {fmt}",
                partial(_align, ours, x, rois, out),
                partial(_align, theirs, x, rois, out),
                1.5 if targeted else None,
            )
            xg = x.detach().requires_grad_()
            grad = torch.randn(k, s.features[1], out, out, generator=g).to(b.device)
            if channels_last:
                grad = grad.contiguous(memory_format=torch.channels_last)
            b.case(
                f"roi_align {head} fwd+bwd {fmt}",
                partial(_align_backward, ours, xg, rois, out, grad),
                partial(_align_backward, theirs, xg, rois, out, grad),
                2.0 if targeted else None,
            )
            b.case(
                f"roi_align {head} fwd+bwd {fmt} deterministic",
                partial(_align_backward, ours, xg, rois, out, grad, True),
                partial(_align_backward, theirs, xg, rois, out, grad, True),
                5.0 if targeted else None,
            )


def _pooler_backward(pooler, x, boxes, image_shapes):
    return torch.autograd.grad(pooler(x, boxes, image_shapes).sum(), list(x.values()))


def fpn_cases(b: Bench, s: Shapes, g):
    n, c = s.features[0], s.features[1]
    x = {f"p{i}": torch.randn(n, c, h, w, generator=g).to(b.device) for i, (h, w) in enumerate(s.fpn_sizes)}
    image_shapes = [s.image] * n
    boxes = [b.rois(s.fpn_rois_per_image, 1, s.image[0], s.image[1], 1.0, g)[:, 1:] for _ in range(n)]
    ours = roiops.MultiScaleRoIAlign(list(x), 7, 2, aligned=False)  # torchvision's pixel model
    theirs = torchvision.ops.MultiScaleRoIAlign(list(x), 7, 2)
    xg = {k: v.detach().requires_grad_() for k, v in x.items()}
    name = f"MultiScaleRoIAlign 4 levels, {n * s.fpn_rois_per_image} RoIs"
    b.case(f"{name} fwd", partial(ours, x, boxes, image_shapes), partial(theirs, x, boxes, image_shapes), 3.0)
    b.case(
        f"{name} fwd+bwd",
        partial(_pooler_backward, ours, xg, boxes, image_shapes),
        partial(_pooler_backward, theirs, xg, boxes, image_shapes),
    )


def roi_pool_cases(b: Bench, s: Shapes, g):
    x = b.features(s.features, False, g)
    rois = b.rois(s.box_rois, s.features[0], s.features[2], s.features[3], 0.25, g)
    b.case(
        "roi_pool box head fwd NCHW",
        partial(roiops.roi_pool, x, rois, 7, 0.25),
        partial(torchvision.ops.roi_pool, x, rois, 7, 0.25),
    )


def nms_cases(b: Bench, s: Shapes, g):
    for n in s.nms_sizes:
        boxes, scores = b.clustered_boxes(n, g)
        for thr in (0.7, 0.5):
            b.case(
                f"nms {n} clustered boxes, IoU {thr}",
                partial(roiops.nms, boxes, scores, thr),
                partial(torchvision.ops.nms, boxes, scores, thr),
                2.0 if n >= 20000 else None,
            )
    n = s.batched_nms_boxes
    boxes, scores = b.clustered_boxes(n, g)
    idxs = torch.randint(0, 80, (n,), generator=g).to(b.device)
    b.case(
        f"batched_nms {n} boxes, 80 classes",
        partial(roiops.batched_nms, boxes, scores, idxs, 0.5),
        partial(torchvision.ops.batched_nms, boxes, scores, idxs, 0.5),
        3.0,
    )
    for n in s.soft_nms_sizes:
        boxes, scores = b.clustered_boxes(n, g)
        for method in ("linear", "gaussian"):
            b.case(
                f"soft_nms {n} clustered boxes, {method}",
                partial(roiops.soft_nms, boxes, scores, method=method),
            )


def paste_cases(b: Bench, s: Shapes, g):
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    h, w = s.image
    masks = torch.rand(s.masks, 1, 28, 28, generator=g).to(b.device)
    xy = torch.rand(s.masks, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8])
    wh = torch.rand(s.masks, 2, generator=g) * torch.tensor([w / 6, h / 6]) + 10
    boxes = torch.cat([xy, xy + wh], dim=1).to(b.device)
    b.case(
        f"paste_masks {s.masks} x 28x28 into {h}x{w} (bool)",
        partial(roiops.paste_masks, masks, boxes, (h, w), threshold=0.5),
        lambda: paste_masks_in_image(masks, boxes, (h, w)) > 0.5,
        5.0,
    )


def markdown(cases: list[Case]) -> str:
    lines = ["| case | roiops ms | torchvision ms | speed-up | target |", "|---|---:|---:|---:|---:|"]
    for c in cases:
        theirs = "-" if c.theirs_ms is None else f"{c.theirs_ms:.3f}"
        speedup = "-" if c.speedup is None else f"{c.speedup:.2f}x"
        target = "report" if c.target is None else f"{c.target:g}x" + ("" if c.met else " MISSED")
        lines.append(f"| {c.name} | {c.ours_ms:.3f} | {theirs} | {speedup} | {target} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (the CPU dry run); no targets")
    parser.add_argument("--seconds", type=float, default=0.2, help="timed seconds per side and case")
    parser.add_argument("--no-profile", action="store_true", help="no profiler table for missed targets")
    parser.add_argument("--json", help="write the cases here")
    args, _ = parser.parse_known_args(argv)  # run_all.py passes the CPU scripts' options on
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("bench_cuda: no CUDA device; skipped (GPU figures are pending a session with a GPU)")
            return 0
        if not roiops._extension.has_cuda_kernels():
            print(
                "bench_cuda: roiops._C was built without the CUDA kernels; rebuild with ROIOPS_WITH_CUDA=1",
                file=sys.stderr,
            )
            return 1
    bench = Bench(device, args.seconds, args.tiny, not args.no_profile, args.json)
    shapes = TINY if args.tiny else FULL
    g = torch.Generator().manual_seed(0)
    versions = f"torch {torch.__version__}, torchvision {torchvision.__version__}"
    print(f"bench_cuda on {bench.device_name}: {versions}")
    print(f"{'case':<58} {'roiops ms':>9} {'tv ms':>9} {'speedup':>7}", flush=True)
    for group in (roi_align_cases, fpn_cases, roi_pool_cases, nms_cases, paste_cases):
        try:
            group(bench, shapes, g)
        except Exception as err:  # noqa: BLE001  (input construction failed: report, go on)
            bench.errors.append(f"{group.__name__}: {type(err).__name__}: {err}")
            print(f"ERROR {group.__name__}: {type(err).__name__}: {err}", flush=True)
            traceback.print_exc()
    bench.save()
    print("\n" + markdown(bench.cases))
    return 1 if bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())
