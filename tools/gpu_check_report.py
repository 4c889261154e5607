"""The two Python steps of tools/gpu_check.sh that are neither tests nor benchmarks.

gpu_check_report.py env ENV_TXT ENV_JSON
    The environment: GPU, driver, nvcc, compiler, Python, torch / torchvision / CUDA / cuDNN,
    the test packages, free GPU memory. Readable in ENV_TXT, the figures the report needs in
    ENV_JSON. Works without a GPU and without torch (says what is missing).

gpu_check_report.py report --out OUT_DIR --work WORK_DIR --total-seconds S [--dry-run]
    Gathers WORK_DIR/{env.json, stages.tsv, smoke.json, ops.json, models.json} and
    OUT_DIR/tests.xml into OUT_DIR/bench.json (everything), OUT_DIR/bench.md (the tables to
    paste into benchmarks/RESULTS.md) and OUT_DIR/summary.txt (stages, test counts, failures,
    missed targets, total wall time). Imports no torch.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

PACKAGES = (
    "torch",
    "torchvision",
    "numpy",
    "pytest",
    "hypothesis",
    "pytest-benchmark",
    "pytest-timeout",
    "safetensors",
    "pycocotools",
    "ninja",
    "setuptools",
    "pillow",
)


def _command(*argv: str) -> str:
    if shutil.which(argv[0]) is None:
        return f"({argv[0]} not found)"
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        return f"({' '.join(argv)} failed: {err})"
    return (done.stdout + done.stderr).strip()


def environment() -> tuple[str, dict]:
    from importlib import metadata

    lines = [
        f"date (UTC): {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S}",
        f"host: {platform.node()}, {platform.platform()}, {os.cpu_count()} CPUs",
        f"python: {sys.version.split()[0]} at {sys.executable}",
    ]
    info = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
    for name in PACKAGES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "absent"
        lines.append(f"  {name}: {version}")
        info[name] = version
    smi = _command(
        "nvidia-smi", "--query-gpu=name,driver_version,memory.total,memory.free", "--format=csv,noheader"
    )
    info["nvidia_smi"] = smi
    lines += ["", "nvidia-smi --query-gpu=name,driver_version,memory.total,memory.free:", smi]
    lines += [
        "",
        "nvcc --version:",
        _command("nvcc", "--version"),
        f"nvcc: {shutil.which('nvcc')}",
        f"CUDA_HOME: {os.environ.get('CUDA_HOME', '(unset)')}",
        "",
        "c++ --version:",
        _command("c++", "--version").splitlines()[0] if shutil.which("c++") else "(c++ not found)",
    ]
    try:
        import torch

        lines += [
            "",
            f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}",
            f"torch.cuda.is_available(): {torch.cuda.is_available()}",
        ]
        info.update(torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            capability = "{}.{}".format(*torch.cuda.get_device_capability())
            lines += [
                f"device: {torch.cuda.get_device_name()}, capability {capability}, "
                f"{free / 2**30:.1f} of {total / 2**30:.1f} GiB free",
                f"torch's own arch list: {' '.join(torch.cuda.get_arch_list())}",
            ]
            info.update(gpu=torch.cuda.get_device_name(), capability=capability, free_gib=free / 2**30)
    except Exception as err:  # noqa: BLE001  (the report says what is broken, it does not stop)
        lines.append(f"torch: cannot be used: {type(err).__name__}: {err}")
    full_smi = _command("nvidia-smi")
    return "\n".join(lines + ["", "nvidia-smi:", full_smi]) + "\n", info


def _load(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _stages(path: str) -> list[dict]:
    stages = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                name, status, seconds, limit, command = (line.rstrip("\n").split("\t") + [""] * 5)[:5]
                stages.append(
                    {
                        "stage": name,
                        "status": status,
                        "seconds": int(seconds or 0),
                        "limit_s": int(limit or 0),
                        "command": command,
                    }
                )
    return stages


def _junit(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        return {"error": f"unreadable junit XML: {err}"}
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts["failed_tests"] = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in root.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return counts


def _ratio(value) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _target(target, met) -> str:
    return "report" if target is None else f">= {target:g}x" + (" MISSED" if met is False else "")


def markdown(data: dict) -> str:
    env = data.get("env") or {}
    dry = " (DRY RUN on the CPU: no GPU figures)" if data["dry_run"] else ""
    lines = [
        f"## GPU check, {data['date']} UTC{dry}",
        "",
        f"GPU: {env.get('gpu', 'none')} (driver and memory: {env.get('nvidia_smi', '?')}); "
        f"torch {env.get('torch', '?')} (CUDA {env.get('torch_cuda', '?')}), "
        f"torchvision {env.get('torchvision', '?')}, Python {env.get('python', '?')}. "
        f"Total wall time {data['total_seconds']} s.",
        "",
        "| stage | status | seconds | limit |",
        "|---|---|---:|---:|",
    ]
    lines += [f"| {s['stage']} | {s['status']} | {s['seconds']} | {s['limit_s']} |" for s in data["stages"]]
    tests = data.get("tests")
    if tests and "tests" in tests:
        lines += [
            "",
            f"CUDA tests (`pytest tests -m cuda`): {tests['passed']} passed, {tests['failures']} failed, "
            f"{tests['errors']} errors, {tests['skipped']} skipped.",
        ]
    ops = data.get("ops")
    if ops:
        timing = "median of CUDA-event timings" if ops.get("device") != "CPU" else "wall clock, one call"
        lines += [
            "",
            f"### roiops vs torchvision CUDA ops ({ops.get('device')}, {timing})",
            "",
            "| case | roiops ms | torchvision ms | speed-up | target |",
            "|---|---:|---:|---:|---|",
        ]
        for c in ops["cases"]:
            theirs = "-" if c["theirs_ms"] is None else f"{c['theirs_ms']:.3f}"
            lines.append(
                f"| {c['name']} | {c['ours_ms']:.3f} | {theirs} | "
                f"{_ratio(c['speedup'])} | {_target(c['target'], c['met'])} |"
            )
        lines += [f"- error: {e}" for e in ops.get("errors", [])]
    models = data.get("models")
    if models:
        lines += [
            "",
            "### r50_fpn end to end, maskzoo vs torchvision, same weights",
            "",
            "| case | torchvision ms | maskzoo ms | speed-up | target | outputs / losses |",
            "|---|---:|---:|---:|---|---|",
        ]
        for r in models.get("inference", []):
            o = r["outputs"]
            agree = (
                f"equal: {o['equal']} (max box diff {o['max_box_diff_px']:.1e} px, "
                f"unmatched {o['unmatched']}, same order {o['same_order']})"
            )
            lines.append(
                f"| {r['case']} | {r['torchvision_ms']:.2f} | {r['maskzoo_ms']:.2f} | "
                f"{_ratio(r['speedup'])} | {_target(r['target'], r['met'])} | {agree} |"
            )
        for r in models.get("training", []):
            lines.append(
                f"| {r['case']} | {r['torchvision_ms']:.2f} | {r['maskzoo_ms']:.2f} | "
                f"{_ratio(r['speedup'])} | {_target(r['target'], r['met'])} | finite: {r['finite']} |"
            )
        lines += [f"- error: {e}" for e in models.get("errors", [])]
    smoke = data.get("smoke")
    if smoke:
        lines += ["", "### maskzoo smoke", ""]
        lines += [f"- {'PASS' if c['ok'] else 'FAIL'} {c['check']}: {c['detail']}" for c in smoke["checks"]]
    missed = data["missed_targets"]
    if missed:
        lines += [
            "",
            "Missed targets (profiles of the top kernels in bench.json and bench.log): " + "; ".join(missed),
        ]
    return "\n".join(lines) + "\n"


def summary(data: dict) -> str:
    lines = [
        f"gpu_check {'DRY RUN ' if data['dry_run'] else ''}{data['date']} UTC, "
        f"total wall time {data['total_seconds']} s"
    ]
    lines += [
        f"  {s['stage']:<13} {s['status']:<28} {s['seconds']:>4} s (limit {s['limit_s']} s)"
        for s in data["stages"]
    ]
    tests = data.get("tests")
    if tests and "tests" in tests:
        lines.append(
            f"CUDA tests: {tests['passed']} passed, {tests['failures']} failed, {tests['errors']} errors, "
            f"{tests['skipped']} skipped"
        )
        lines += [f"  FAILED {t}" for t in tests["failed_tests"][:40]]
    for c in (data.get("smoke") or {}).get("checks", []):
        if not c["ok"]:
            lines.append(f"smoke FAILED {c['check']}: {c['detail']}")
    for part in ("ops", "models"):
        lines += [f"{part} benchmark error: {e}" for e in (data.get(part) or {}).get("errors", [])]
    if data["missed_targets"]:
        lines.append("missed targets: " + "; ".join(data["missed_targets"]))
    return "\n".join(lines) + "\n"


def report(args) -> int:
    work = args.work
    data = {
        "date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}",
        "dry_run": args.dry_run,
        "total_seconds": args.total_seconds,
        "env": _load(os.path.join(work, "env.json")),
        "stages": _stages(os.path.join(work, "stages.tsv")),
        "tests": _junit(os.path.join(args.out, "tests.xml")),
        "smoke": _load(os.path.join(work, "smoke.json")),
        "ops": _load(os.path.join(work, "ops.json")),
        "models": _load(os.path.join(work, "models.json")),
    }
    missed = [
        f"{c['name']}: {_ratio(c['speedup'])} (target {c['target']:g}x)"
        for c in (data["ops"] or {}).get("cases", [])
        if c.get("met") is False
    ]
    for part in ("inference", "training"):
        missed += [
            f"r50_fpn {r['case']}: {_ratio(r['speedup'])} (target {r['target']:g}x)"
            for r in (data["models"] or {}).get(part, [])
            if r.get("met") is False
        ]
    data["missed_targets"] = missed
    with open(os.path.join(args.out, "bench.json"), "w") as f:
        json.dump(data, f, indent=1)
    with open(os.path.join(args.out, "bench.md"), "w") as f:
        f.write(markdown(data))
    text = summary(data)
    with open(os.path.join(args.out, "summary.txt"), "w") as f:
        f.write(text)
    print(text, end="")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    env = sub.add_parser("env")
    env.add_argument("txt")
    env.add_argument("json")
    rep = sub.add_parser("report")
    rep.add_argument("--out", required=True)
    rep.add_argument("--work", required=True)
    rep.add_argument("--total-seconds", type=int, required=True)
    rep.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "report":
        return report(args)
    text, info = environment()
    with open(args.txt, "w") as f:
        f.write(text)
    with open(args.json, "w") as f:
        json.dump(info, f, indent=1)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
