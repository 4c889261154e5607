"""r50_fpn end to end on the GPU: maskzoo against torchvision's maskrcnn_resnet50_fpn, same weights.

Inference: batches of 1 and 8 images of 800 x 1216 (no resizing at the default 800 / 1333), 100
detections each, in fp32 (TF32 off, so that "equal outputs" means fp32 agreement) and under bf16
autocast; against torchvision's outputs, per image the detection counts, and each detection
matched to one of the same label: the largest box difference and the detections left unmatched.
Training: one SGD step (forward, backward, update) on 2 images of 800 x 800 with 3 objects each,
in fp32 and with AMP (float16 autocast and a GradScaler, as maskzoo's training loop runs it).

The weights: bench_models.torchvision_model (frozen batch norm with non-trivial statistics,
peaked class scores), saved as a state_dict and loaded with ``maskzoo.build("r50_fpn",
checkpoint=...)``. maskzoo runs as built (not fused). Timing: CUDA events around each call, a
few warm-up calls, the median. Where a target is missed, a torch.profiler table of the top
kernels of both models is printed and kept in the JSON.

    python benchmarks/bench_models_cuda.py --json out/models.json
    python benchmarks/bench_models_cuda.py --device cpu --tiny    # the CPU dry run: 64 px images

Without a GPU and no --device cpu: says so and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import traceback

import torch

import maskzoo

INFERENCE_TARGET = 1.2  # fp32 end to end, batch 1 and 8
AMP_TRAINING_TARGET = 1.1
# The CPU dry run's models: 64 px images, few proposals and detections (seconds, not minutes).
# torchvision's keyword names, which maskzoo.build accepts too.
TINY_OVERRIDES = {
    "min_size": 64,
    "max_size": 64,
    "rpn_pre_nms_top_n_test": 100,
    "rpn_post_nms_top_n_test": 50,
    "rpn_pre_nms_top_n_train": 100,
    "rpn_post_nms_top_n_train": 50,
    "box_batch_size_per_image": 32,
    "box_detections_per_img": 10,
}


def build_pair(device: torch.device, size: tuple[int, int], training: bool, tiny: bool):
    """(torchvision model, maskzoo model) with the same weights, on device."""
    from bench_models import torchvision_model

    kwargs = {"min_size": min(size), "max_size": max(size)}
    if not training:
        kwargs.update(box_score_thresh=0.0, box_detections_per_img=100)
    if tiny:
        kwargs.update(TINY_OVERRIDES)
    tv = torchvision_model(**kwargs)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "maskrcnn_resnet50_fpn.pth")
        torch.save(tv.state_dict(), path)
        mz = maskzoo.build("r50_fpn", checkpoint=path, **kwargs)
    tv, mz = tv.to(device), mz.to(device)
    return (tv.train(), mz.train()) if training else (tv.eval(), mz.eval())


def agreement(reference, other, masks: bool = False) -> dict:
    """How far two detectors' outputs (lists of per-image dicts, any devices) agree.

    Per image the detection counts; each reference detection is matched to the unused detection of
    the same label with the nearest box (two near-equal scores may swap places between devices or
    implementations, so the order is reported but not required); the largest box difference of the
    matched pairs (px); with ``masks``, the IoU of the masks thresholded at 0.5, pooled over the
    matched pairs. ``unmatched`` counts the detections of either side left without a partner.
    """
    counts, unmatched, box_diff, same_order, inter, union = [], 0, 0.0, True, 0, 0
    keys = ("boxes", "labels", "masks") if masks else ("boxes", "labels")  # pasted masks are large
    for a, b in zip(reference, other):
        a = {k: a[k].detach().cpu() for k in keys}
        b = {k: b[k].detach().cpu() for k in keys}
        n, m = int(a["boxes"].shape[0]), int(b["boxes"].shape[0])
        counts.append((n, m))
        same_order &= n == m and bool(torch.equal(a["labels"], b["labels"]))
        if n == 0 or m == 0:
            unmatched += n + m
            continue
        dist = (a["boxes"].double()[:, None, :] - b["boxes"].double()[None, :, :]).abs().amax(dim=2)
        dist[a["labels"][:, None] != b["labels"][None, :]] = float("inf")
        used = torch.zeros(m, dtype=torch.bool)
        for i in range(n):
            row = dist[i].masked_fill(used, float("inf"))
            j = int(row.argmin())
            if row[j] == float("inf"):
                unmatched += 1
                continue
            used[j] = True
            box_diff = max(box_diff, float(row[j]))
            if masks:
                ma, mb = a["masks"][i] > 0.5, b["masks"][j] > 0.5
                inter += int((ma & mb).sum())
                union += int((ma | mb).sum())
        unmatched += m - int(used.sum())
    result = {
        "detections": counts,
        "unmatched": unmatched,
        "max_box_diff_px": box_diff,
        "same_order": same_order,
    }
    result["equal"] = all(x == y for x, y in counts) and unmatched == 0 and box_diff <= 1e-2
    if masks:
        result["mask_iou"] = inter / union if union else 1.0
    return result


def training_targets(num_images: int, size: int, device, g):
    targets = []
    for _ in range(num_images):
        xy = torch.rand(3, 2, generator=g) * size * 0.5
        boxes = torch.cat([xy, xy + size * (0.15 + 0.3 * torch.rand(3, 2, generator=g))], dim=1)
        masks = torch.zeros(3, size, size, dtype=torch.uint8)
        for j, (x1, y1, x2, y2) in enumerate(boxes.round().int().tolist()):
            masks[j, y1:y2, x1:x2] = 1
        targets.append(
            {
                "boxes": boxes.to(device),
                "labels": torch.tensor([1, 5, 17], device=device),
                "masks": masks.to(device),
            }
        )
    return targets


def speed_row(case: str, tv_ms: float, mz_ms: float, target: float | None, **extra) -> dict:
    """One result row: both medians, the speed-up over torchvision, and whether it meets `target`
    (None: no target for this case); `profile` is filled in where a target is missed."""
    speedup = tv_ms / mz_ms
    met = None if target is None else speedup >= target
    return {"case": case, "torchvision_ms": tv_ms, "maskzoo_ms": mz_ms, "speedup": speedup,
            "target": target, "met": met, **extra, "profile": ""}


class Runner:
    def __init__(self, device: torch.device, tiny: bool, json_path=None):
        from bench_cuda import Timer

        self.device, self.tiny, self.json_path = device, tiny, json_path
        self.time = Timer(device, 0.5) if not tiny else Timer(device, 0.0, warmup=0, min_reps=1)
        device_name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
        self.result = {"device": device_name, "inference": [], "training": [], "errors": []}

    def save(self):
        """Rewrites the JSON after every row: a run stopped at its time limit keeps what it measured."""
        if self.json_path:
            with open(self.json_path, "w") as f:
                json.dump(self.result, f, indent=1)

    def add(self, part: str, row: dict):
        self.result[part].append(row)
        self.save()

    def error(self, what: str, err: Exception):
        self.result["errors"].append(f"{what}: {type(err).__name__}: {err}")
        print(f"ERROR {what}: {type(err).__name__}: {err}", flush=True)
        traceback.print_exc()
        self.save()

    def autocast(self, dtype):
        return (
            torch.autocast(self.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        )

    def profile(self, calls: dict) -> str:
        from bench_cuda import profile_table

        return "\n".join(f"{name}:\n{profile_table(fn, self.device, rows=12)}" for name, fn in calls.items())

    def inference(self):
        size = (64, 64) if self.tiny else (800, 1216)
        tv, mz = build_pair(self.device, size, training=False, tiny=self.tiny)
        g = torch.Generator().manual_seed(0)
        images = [torch.rand(3, *size, generator=g).to(self.device) for _ in range(8)]
        for precision, dtype in (("fp32", None), ("bf16 autocast", torch.bfloat16)):
            for batch in (1,) if self.tiny else (1, 8):
                what = f"inference batch {batch} {precision}"

                def run(model, batch=batch, dtype=dtype):
                    with torch.no_grad(), self.autocast(dtype):
                        return model(images[:batch])

                try:
                    outputs = agreement(run(tv), run(mz))
                    tv_ms, mz_ms = self.time(lambda: run(tv)), self.time(lambda: run(mz))
                except Exception as err:  # noqa: BLE001  (report, go on with the next case)
                    self.error(what, err)
                    continue
                target = INFERENCE_TARGET if dtype is None and not self.tiny else None
                row = speed_row(what, tv_ms, mz_ms, target, outputs=outputs)
                if row["met"] is False:
                    row["profile"] = self.profile(
                        {"maskzoo": lambda: run(mz), "torchvision": lambda: run(tv)}
                    )
                self.add("inference", row)
                print(
                    f"{what:<34} torchvision {tv_ms:9.2f} ms  maskzoo {mz_ms:9.2f} ms  "
                    f"{tv_ms / mz_ms:5.2f}x  outputs {outputs}",
                    flush=True,
                )
                if row["profile"]:
                    print(row["profile"], flush=True)

    def training(self):
        size = 64 if self.tiny else 800
        models = build_pair(self.device, (size, size), training=True, tiny=self.tiny)
        g = torch.Generator().manual_seed(0)
        images = [torch.rand(3, size, size, generator=g).to(self.device) for _ in range(2)]
        targets = training_targets(2, size, self.device, g)
        for precision, dtype in (("fp32", None), ("AMP float16", torch.float16)):
            what = f"training step {precision}"
            if dtype is not None and self.device.type != "cuda":
                print(f"{what}: skipped (AMP is CUDA only)")
                continue
            steps = {}
            for name, model in zip(("torchvision", "maskzoo"), models):
                params = [p for p in model.parameters() if p.requires_grad]
                optimizer = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
                scaler = torch.amp.GradScaler("cuda", enabled=dtype is not None)

                def step(model=model, optimizer=optimizer, scaler=scaler, dtype=dtype):
                    torch.manual_seed(0)  # the same proposal and RoI sampling where their RNG use agrees
                    with self.autocast(dtype):
                        losses = model(images, targets)
                    scaler.scale(sum(losses.values())).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    return losses

                steps[name] = step
            try:
                losses = {n: {k: float(v.detach()) for k, v in s().items()} for n, s in steps.items()}
                tv_ms, mz_ms = self.time(steps["torchvision"]), self.time(steps["maskzoo"])
            except Exception as err:  # noqa: BLE001  (report, go on)
                self.error(what, err)
                continue
            finite = all(torch.isfinite(torch.tensor(list(v.values()))).all() for v in losses.values())
            target = AMP_TRAINING_TARGET if dtype is not None and not self.tiny else None
            row = speed_row(what, tv_ms, mz_ms, target, first_step_losses=losses, finite=bool(finite))
            if row["met"] is False:
                row["profile"] = self.profile(
                    {"maskzoo": steps["maskzoo"], "torchvision": steps["torchvision"]}
                )
            self.add("training", row)
            print(
                f"{what:<34} torchvision {tv_ms:9.2f} ms  maskzoo {mz_ms:9.2f} ms  {tv_ms / mz_ms:5.2f}x  "
                f"finite losses {finite}",
                flush=True,
            )
            for name, lo in losses.items():
                print(
                    f"  first-step losses {name}: " + ", ".join(f"{k}={v:.5f}" for k, v in sorted(lo.items()))
                )
            if row["profile"]:
                print(row["profile"], flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="64 px images, batch 1 (the CPU dry run)")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--json", help="write the results here")
    args, _ = parser.parse_known_args(argv)  # run_all.py passes the CPU scripts' options on
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_models_cuda: no CUDA device; skipped (GPU figures are pending a session with a GPU)")
        return 0
    if device.type == "cuda":
        # fp32 means fp32: TF32 convolutions would make "equal outputs" a matter of luck.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    runner = Runner(device, args.tiny, args.json)
    for part in (runner.inference,) + (() if args.skip_training else (runner.training,)):
        try:
            part()
        except Exception as err:  # noqa: BLE001  (building the models failed: report, go on)
            runner.error(part.__name__, err)
    runner.save()
    return 1 if runner.result["errors"] else 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
