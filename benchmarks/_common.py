"""What the benchmarks share: the allocator setting (every benchmark), and for the scripts that do
not run under pytest-benchmark (bench_cuda.py, bench_models.py) timing, table and JSON output.

Each benchmark measures roiops and its torchvision counterpart in the same process, under the same
allocator and thread settings. The machine is shared and noisy: read the ratios, not the absolute
times.
"""

import argparse
import ctypes
import json
import os
import platform
from dataclasses import asdict, dataclass

import torch
import torch.utils.benchmark as tbench

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def keep_freed_memory() -> None:
    """Keep freed memory in the process (glibc): no mmap per large tensor, no trimming.

    With glibc's defaults every allocation over 32 MiB is a fresh mmap that is page-faulted and
    zeroed again on each call, which can dominate a large kernel's time.
    """
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_max = -1, -4
    libc.mallopt(m_mmap_max, 0)
    libc.mallopt(m_trim_threshold, 2**30)


@dataclass
class Row:
    case: str
    threads: int
    ours_ms: float
    theirs_ms: float | None

    @property
    def speedup(self) -> float | None:
        return None if self.theirs_ms is None else self.theirs_ms / self.ours_ms


def median_ms(fn, min_run_time: float) -> float:
    """Median milliseconds per call of fn, under the caller's torch thread count."""
    fn()  # warm up (allocations, lazy initialisation)
    # Timer runs its statement under num_threads, which defaults to 1 whatever the caller set.
    timer = tbench.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--allocator", choices=["default", "kept"], default="kept",
                        help="glibc default, or keep freed memory in the process (see keep_freed_memory)")
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds per measurement")
    parser.add_argument("--quick", action="store_true", help="smaller shapes, for a smoke run")
    args = parser.parse_args()
    if args.allocator == "kept":
        keep_freed_memory()
    return args


def report(topic: str, rows: list[Row], args: argparse.Namespace) -> None:
    machine = platform.processor() or platform.machine()
    print(f"\n## {topic}  (allocator={args.allocator}, torch {torch.__version__}, {machine})")
    print(f"| {'case':<48} | thr | roiops ms | torchvision ms | speed-up |")
    print(f"|{'-' * 50}|-----|-----------|----------------|----------|")
    for r in rows:
        theirs = "-" if r.theirs_ms is None else f"{r.theirs_ms:.3f}"
        speed = "-" if r.speedup is None else f"{r.speedup:.1f}x"
        print(f"| {r.case:<48} | {r.threads:>3} | {r.ours_ms:>9.3f} | {theirs:>14} | {speed:>8} |")
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"{topic}.json")
    with open(path, "w") as f:
        json.dump({"topic": topic, "allocator": args.allocator, "torch": torch.__version__,
                   "rows": [dict(asdict(r), speedup=r.speedup) for r in rows]}, f, indent=1)
    print(f"(written to {os.path.relpath(path)})")
