"""Deployment speed of r50_fpn: eager, bf16, AOTInductor, ONNX in onnxruntime and OpenVINO.

One 800 x 1216 image, 100 detections, the same weights everywhere (torchvision's
maskrcnn_resnet50_fpn built as for its COCO_V1 weights with random, realistic frozen batch norms
and peaked class scores, as bench_models.py), loaded into maskzoo. Variants:

    torchvision eager fp32 | maskzoo fused fp32 | maskzoo fused bf16 (precision policy "network",
    the default, and "heads") |
    AOTInductor package (--pt2) | torch.compile of maskzoo fused fp32 with Inductor's freezing
    (--compile) | maskzoo's ONNX file in onnxruntime | the same file in OpenVINO (fp32, and its
    bf16 inference-precision hint)

Each variant's detections are compared with maskzoo fp32: how many of its 100 are found with box
IoU > 0.9 and the same label. Times are medians of interleaved runs in one process (exporting and
compiling happen first, untimed). The machine is shared and noisy: read the ratios.

    python benchmarks/bench_deploy.py --repeats 3 [--pt2] [--compile] [--threads 2] [--cache DIR]
                                      [--warmup N] [--only VARIANT ...]

Every variant allocates an image-sized float mask per detection (100 x 800 x 1216: 389 MB) on each
call, among buffers of other sizes and other allocators (onnxruntime's, OpenVINO's), and which call
finds that much free heap and which faults in fresh pages changes from call to call: the mask
pasting of maskzoo eager and of the AOTInductor package alike took 8 ms in one round and 67 ms in
the next (torchvision in the loop, 2026-12-01). Medians over several repeats absorb it; --warmup
adds untimed rounds, --only times a subset (plus the two references, torchvision eager fp32 and
maskzoo fused fp32).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time

import torch
import torch._inductor.config

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import keep_freed_memory  # noqa: E402
from bench_models import torchvision_model  # noqa: E402


def matched(reference: dict, other: dict) -> int:
    import roiops

    if len(reference["boxes"]) == 0 or len(other["boxes"]) == 0:
        return 0
    same = reference["labels"][:, None] == other["labels"][None, :]
    return int(((roiops.box_iou(reference["boxes"], other["boxes"]) > 0.9) & same).any(1).sum())


def as_detections(outputs) -> dict:
    boxes, labels, scores, masks = (torch.as_tensor(o) for o in outputs)
    return {"boxes": boxes, "labels": labels, "scores": scores, "masks": masks}


def openvino_run(compiled, image: torch.Tensor) -> dict:
    results = compiled(image.numpy())
    return as_detections([results[o] for o in compiled.outputs])


def build_variants(args, cache: str):
    import maskzoo
    import maskzoo.export
    from maskzoo.modeling.fuse import fuse_for_inference

    tv = torchvision_model(box_score_thresh=0.0, box_detections_per_img=100).eval()
    path = os.path.join(cache, "maskrcnn_resnet50_fpn.pth")
    torch.save(tv.state_dict(), path)
    plain = maskzoo.build("r50_fpn", checkpoint=path, box_score_thresh=0.0, box_detections_per_img=100).eval()
    fused = fuse_for_inference(copy.deepcopy(plain))
    bf16 = fuse_for_inference(copy.deepcopy(plain), dtype=torch.bfloat16)
    bf16_heads = fuse_for_inference(copy.deepcopy(plain), dtype=torch.bfloat16, policy="heads")

    variants = {
        "torchvision eager fp32": lambda image: tv([image])[0],
        "maskzoo fused fp32": lambda image: fused([image])[0],
        "maskzoo fused bf16": lambda image: bf16([image])[0],
        "maskzoo fused bf16 heads": lambda image: bf16_heads([image])[0],
    }
    if args.pt2:
        package = os.path.join(cache, "r50_fpn.pt2")
        if not os.path.exists(package):
            start = time.perf_counter()
            maskzoo.export.to_pt2(plain, package)
            print(f"AOTInductor package: {time.perf_counter() - start:.0f} s", flush=True)
        runner = torch._inductor.aoti_load_package(package)
        variants["AOTInductor package"] = lambda image: as_detections(runner(image))
    if args.compile:
        inductor_model = torch.compile(fuse_for_inference(copy.deepcopy(plain)), dynamic=False)

        def run_compiled(image):
            with torch._inductor.config.patch(freezing=True):
                return inductor_model([image])[0]

        variants["torch.compile, freezing"] = run_compiled
    onnx_path = os.path.join(cache, "r50_fpn.onnx")
    if not os.path.exists(onnx_path):
        start = time.perf_counter()
        maskzoo.export.to_onnx(plain, onnx_path)
        print(f"ONNX export: {time.perf_counter() - start:.0f} s", flush=True)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(onnx_path, options)
    variants["ONNX, onnxruntime"] = lambda image: as_detections(session.run(None, {"image": image.numpy()}))
    try:
        import openvino as ov

        core = ov.Core()
        for hint in ("f32", "bf16"):
            compiled = core.compile_model(
                onnx_path, "CPU", {"INFERENCE_NUM_THREADS": args.threads, "INFERENCE_PRECISION_HINT": hint}
            )
            variants[f"ONNX, OpenVINO {hint}"] = lambda image, c=compiled: openvino_run(c, image)
    except Exception as err:  # noqa: BLE001  (report any OpenVINO failure and go on)
        print(f"OpenVINO: {type(err).__name__}: {str(err)[:300]}", flush=True)
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds over all variants first (>= 1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pt2", action="store_true", help="also compile and time the AOTInductor package")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time torch.compile (one size, freezing; compiled in the warm-up round)",
    )
    parser.add_argument("--cache", default=None, help="folder for the exported files (reused when present)")
    parser.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="VARIANT",
        help="time only these variants and the references (torchvision eager fp32, maskzoo fused fp32)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or tmp
        os.makedirs(cache, exist_ok=True)
        variants = build_variants(args, cache)
        if args.only is not None:
            unknown = sorted(set(args.only) - set(variants))
            if unknown:
                raise SystemExit(f"--only: no variant {unknown}; there are {sorted(variants)}")
            keep = {"torchvision eager fp32", "maskzoo fused fp32", *args.only}
            variants = {name: fn for name, fn in variants.items() if name in keep}
        image = torch.rand(3, 800, 1216, generator=torch.Generator().manual_seed(0))
        outputs, times = {}, {name: [] for name in variants}
        with torch.inference_mode():
            for name, fn in list(variants.items()):  # warm-up, and the detections to compare
                try:
                    outputs[name] = fn(image)
                except Exception as err:  # noqa: BLE001
                    print(f"{name}: {type(err).__name__}: {str(err)[:300]}", flush=True)
                    del variants[name], times[name]
            for _ in range(args.warmup - 1):
                for fn in variants.values():
                    fn(image)
            for _ in range(args.repeats):
                for name, fn in variants.items():
                    start = time.perf_counter()
                    fn(image)
                    times[name].append(time.perf_counter() - start)
    reference = outputs["maskzoo fused fp32"]
    base = statistics.median(times["torchvision eager fp32"])
    fp32 = statistics.median(times["maskzoo fused fp32"])
    print(f"\nr50_fpn, 1 image 800x1216, {args.threads} threads, median of {args.repeats} (seconds):")
    print(f"{'variant':28s} {'s':>7s} {'vs tv fp32':>11s} {'vs mz fp32':>11s} {'dets':>5s} {'matched':>8s}")
    for name in variants:
        t = statistics.median(times[name])
        print(
            f"{name:28s} {t:7.2f} {base / t:10.2f}x {fp32 / t:10.2f}x {len(outputs[name]['boxes']):5d} "
            f"{matched(reference, outputs[name]):8d}"
        )


if __name__ == "__main__":
    main()
