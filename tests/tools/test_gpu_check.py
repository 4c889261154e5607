"""tools/gpu_check.sh on this machine: the GPU session's one command cannot rot unseen.

The dry run echoes every GPU stage's command and runs the CPU stand-ins: the environment report,
the collection of `pytest tests -m cuda` with pycocotools made unimportable (as on the GPU
machines), the maskzoo smoke and both benchmarks on tiny CPU inputs, and the report. The real
run's branches (time limits, skipped stages, exit status) run with a stand-in python3 that fakes
the GPU machine's stages.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# What the device tool brings back: at most 8 files, directly in OUT_DIR.
EXPECTED = {"env.txt", "build.log", "tests.log", "bench.log", "bench.json", "bench.md", "summary.txt"}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.skip("needs bash and coreutils' timeout")
    out = tmp_path_factory.mktemp("gpu_check") / "out"
    env = dict(os.environ, PY=sys.executable)
    done = subprocess.run(["bash", os.path.join(ROOT, "tools", "gpu_check.sh"), "--dry-run", str(out)],
                          capture_output=True, text=True, env=env, timeout=1800)
    return done, out


def read(out, name):
    return (out / name).read_text()


@pytest.mark.slow
def test_dry_run_succeeds_and_writes_the_files_the_device_tool_brings_back(dry_run):
    done, out = dry_run
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    files = {p.name for p in out.iterdir()}
    assert files == EXPECTED
    assert all((out / f).is_file() and (out / f).stat().st_size < 16 * 2**20 for f in files)


@pytest.mark.slow
def test_dry_run_echoes_the_cuda_build_for_the_local_architecture(dry_run):
    _, out = dry_run
    build = read(out, "build.log")
    for part in ("ROIOPS_WITH_CUDA=1", "TORCH_CUDA_ARCH_LIST=", "MAX_JOBS=", "setup.py build_ext --inplace",
                 "check_registrations.py"):
        assert part in build


@pytest.mark.slow
def test_cuda_tests_collect_without_errors_when_pycocotools_is_missing(dry_run):
    _, out = dry_run
    tests = read(out, "tests.log")
    assert "pytest tests -m cuda" in tests and "--junitxml=" in tests
    summary = re.search(r"^(\d+)/\d+ tests collected \(\d+ deselected\).*$", tests, re.MULTILINE)
    assert summary and int(summary.group(1)) > 0, tests[-3000:]
    assert "error" not in summary.group(0), summary.group(0)
    assert "ERROR collecting" not in tests


@pytest.mark.slow
def test_report_holds_every_stage_and_the_cpu_stand_ins_figures(dry_run):
    _, out = dry_run
    data = json.loads(read(out, "bench.json"))
    assert data["dry_run"] is True
    stages = {s["stage"]: s["status"] for s in data["stages"]}
    assert stages == {
        "env": "ok",
        "build": "dry-run",
        "tests-collect": "ok",
        "smoke-cpu": "ok",
        "ops-cpu": "ok",
        "models-cpu": "ok",
    }
    assert data["smoke"]["checks"] and all(c["ok"] for c in data["smoke"]["checks"])
    assert data["ops"]["cases"] and not data["ops"]["errors"]
    assert data["models"]["inference"] and data["models"]["training"] and not data["models"]["errors"]
    md = read(out, "bench.md")
    assert "DRY RUN" in md and "| roi_align box head fwd NCHW |" in md
    assert "total wall time" in read(out, "summary.txt")


# A python3 that fakes the GPU machine's stages (build, kernel check, pytest, smoke, benchmarks) and
# runs everything else (the environment report, the report) with the real interpreter.
STAND_IN = """#!/usr/bin/env bash
case "$*" in
  *"setup.py build_ext"*) echo "stand-in build"; exit {build_rc};;
  *"get_device_capability"*) echo 9.0; exit 0;;
  *"check_registrations.py"*) exit 0;;
  *"first CUDA kernel"*) echo "stand-in: wrong result"; exit 1;;
  *"-m pytest"*) exit 0;;
  *"gpu_smoke.py"*) sleep 60;;
  *"bench_"*) exit 0;;
esac
exec {python} "$@"
"""


def stand_in_run(tmp_path, build_rc, **limits):
    python = tmp_path / "python3"
    python.write_text(STAND_IN.format(build_rc=build_rc, python=sys.executable))
    python.chmod(0o755)
    env = dict(os.environ, PY=str(python), **{k: str(v) for k, v in limits.items()})
    out = tmp_path / "out"
    done = subprocess.run(["bash", os.path.join(ROOT, "tools", "gpu_check.sh"), str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    stages = {s["stage"]: s["status"] for s in json.loads(read(out, "bench.json"))["stages"]}
    return done.returncode, stages


@pytest.mark.slow
def test_time_limits_and_failures_of_the_gpu_stages_set_the_exit_status(tmp_path):
    # The smoke overruns its 10 s; after it less than the 10 s minimum is left of the 30 s total.
    rc, stages = stand_in_run(tmp_path, 0, GPU_CHECK_SMOKE_S=10, GPU_CHECK_TOTAL_S=30)
    assert stages == {
        "env": "ok",
        "build": "ok",
        "build-verify": "FAILED (exit 1)",
        "tests": "ok",
        "smoke": "TIMEOUT after 10 s",
        "ops": "skipped (out of time)",
        "models": "skipped (out of time)",
    }
    assert rc == 1 | 4 | 8 | 16


@pytest.mark.slow
def test_nothing_runs_after_a_failed_build(tmp_path):
    rc, stages = stand_in_run(tmp_path, 1)
    assert rc == 1
    assert stages["build"] == "FAILED (exit 1)"
    assert all(stages[s] == "skipped (no build)" for s in ("tests", "smoke", "ops", "models"))
