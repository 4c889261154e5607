"""The pytest-benchmark suite in benchmarks/ collects, pairs every roiops case with a baseline,
runs, and writes a run that ratios.py reads. Each check runs pytest in a fresh process: the suite
sets the allocator and thread count process-wide."""

import json
import os
import re
import subprocess
import sys

import pytest
from ratios import format_table

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
KERNEL_MODULES = {"bench_roi_align.py", "bench_nms.py", "bench_boxes.py", "bench_masks.py",
                  "bench_postprocess.py", "bench_rotated.py", "bench_ps_roi.py", "bench_winograd.py"}


def pytest_in_root(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=ROOT, capture_output=True, text=True)


def test_every_roiops_case_is_collected_beside_a_baseline():
    result = pytest_in_root("benchmarks", "--collect-only", "-q")
    assert result.returncode == 0, result.stdout + result.stderr
    ids = re.findall(r"^benchmarks/(\S+?)::(\S+)$", result.stdout, flags=re.M)
    assert {module for module, _ in ids} == KERNEL_MODULES
    cases: dict[str, set[str]] = {}
    for module, test in ids:
        case, impl = re.fullmatch(r"(.*?)(\w+)\]", test).groups()  # impl is the last parameter
        cases.setdefault(f"{module}::{case}", set()).add(impl)
    assert cases and all("roiops" in impls and len(impls) >= 2 for impls in cases.values()), cases


@pytest.mark.slow
def test_roiops_cases_run_and_their_run_makes_a_ratio_table(tmp_path):
    # Every roiops case, plus the cheap torchvision box coding so that the table has rows.
    path = tmp_path / "run.json"
    result = pytest_in_root("benchmarks", "--benchmark-only", "-k", "not torchvision or box_coder",
                            "--benchmark-min-rounds=1", "--benchmark-max-time=0", f"--benchmark-json={path}",
                            "--threads", "1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = json.loads(path.read_text())
    assert run["machine_info"]["torch_threads"] == 1
    assert run["machine_info"]["allocator"] == "kept"
    assert "| BoxCoder.encode 200000 | torchvision |" in format_table(run)
