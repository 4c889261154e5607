"""The ratio table of a saved pytest-benchmark run: roiops against each other implementation of a case.

A case is a pytest-benchmark group; its implementations are the ``impl`` parameter of its tests
(roiops, torchvision, ...). The speed-up is the other implementation's median over roiops'.

    pytest benchmarks --benchmark-only --benchmark-json=run.json && python benchmarks/ratios.py run.json
    pytest benchmarks --benchmark-only --benchmark-autosave && python benchmarks/ratios.py   # newest saved
"""

import argparse
import glob
import json
import os
import sys

OURS = "roiops"


def newest_saved_run(storage: str) -> str:
    """The most recent run that --benchmark-save / --benchmark-autosave wrote under storage."""
    runs = glob.glob(os.path.join(storage, "*", "*.json"))
    if not runs:
        sys.exit(f"no saved benchmark run under {storage}/ (run pytest with --benchmark-autosave)")
    return max(runs, key=os.path.getmtime)


def ratio_rows(run: dict) -> list[tuple[str, str, float | None, float]]:
    """(case, other implementation, roiops median s or None, other median s), in the run's order."""
    cases: dict[str, dict[str, float]] = {}
    for bench in run["benchmarks"]:
        cases.setdefault(bench["group"], {})[bench["params"]["impl"]] = bench["stats"]["median"]
    return [
        (case, impl, medians.get(OURS), median)
        for case, medians in cases.items()
        for impl, median in medians.items()
        if impl != OURS
    ]


def settings_line(run: dict) -> str:
    info, commit = run["machine_info"], run.get("commit_info", {})
    cpu = info.get("cpu", {}).get("brand_raw") or info.get("processor") or info.get("machine", "?")
    revision = (commit.get("id") or "?")[:10] + (" (dirty)" if commit.get("dirty") else "")
    when = run["datetime"][:16].replace("T", " ")
    return (f"{when} UTC, {cpu}, torch {info.get('torch', '?')}, torchvision {info.get('torchvision', '?')}, "
            f"{info.get('torch_threads', '?')} threads, allocator {info.get('allocator', '?')}, "
            f"commit {revision}")


def format_table(run: dict) -> str:
    lines = [
        settings_line(run),
        "",
        "| case | vs | roiops ms | other ms | speed-up |",
        "|------|----|-----------|----------|----------|",
    ]
    for case, impl, ours, theirs in ratio_rows(run):
        ours_ms = "-" if ours is None else f"{ours * 1e3:.3f}"
        speed = "-" if ours is None else f"{theirs / ours:.1f}x"
        lines.append(f"| {case} | {impl} | {ours_ms} | {theirs * 1e3:.3f} | {speed} |")
    extras = [(b["group"], b["params"]["impl"], key, value)
              for b in run["benchmarks"] for key, value in sorted(b.get("extra_info", {}).items())]
    if extras:
        lines.append("")
        lines += [f"- {case}, {impl}: {key} = {value:.4g}" for case, impl, key, value in extras]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", help="a pytest-benchmark JSON file (default: the newest saved run)")
    parser.add_argument("--storage", default=".benchmarks",
                        help="where saved runs are looked for, without a file (pytest-benchmark's default)")
    args = parser.parse_args()
    path = args.run or newest_saved_run(args.storage)
    with open(path) as f:
        run = json.load(f)
    print(f"({path})")
    print(format_table(run))


if __name__ == "__main__":
    main()
