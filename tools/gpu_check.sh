#!/usr/bin/env bash
# The whole GPU verification in one command, for the rare minutes on a machine with a CUDA GPU:
#
#   tools/gpu_check.sh OUT_DIR              on the GPU machine, from anywhere
#   tools/gpu_check.sh --dry-run OUT_DIR    without a GPU: every stage's command echoed, the CPU parts run
#
# Stages (each under its own time limit: build 240 s, tests 80 + smoke 45 s, ops 70 + models 50 s;
# the whole under GPU_CHECK_TOTAL_S = 470 s, later stages shortened to fit):
#   env      GPU, driver, nvcc, Python, torch / torchvision / CUDA versions, free GPU memory -> env.txt
#   build    roiops._C with the CUDA kernels for this GPU's architecture only, in place, with the
#            python3 that is there (no network, no installs)                              -> build.log
#   tests    pytest tests -m cuda (the whole suite's CUDA tests), junit XML                -> tests.log, tests.xml
#   smoke    tools/gpu_smoke.py: maskzoo inference / training / CPU agreement on the GPU  -> tests.log
#   ops      benchmarks/bench_cuda.py: roiops vs torchvision CUDA ops                      -> bench.log
#   models   benchmarks/bench_models_cuda.py: r50_fpn end to end vs torchvision            -> bench.log
#   report   bench.json, bench.md (the tables for benchmarks/RESULTS.md), summary.txt
# Every stage runs even when an earlier one failed, except that nothing runs after a failed build.
# At most 8 files, all directly in OUT_DIR.
#
# Exit status: the sum of the failed stages' bits: 1 build, 2 CUDA tests, 4 smoke, 8 op benchmarks,
# 16 model benchmarks, 32 env or report; 64 usage. Missed speed-up targets are not failures (they are
# listed in summary.txt and bench.md).
#
# Environment: PY (default python3), GPU_CHECK_{BUILD,TESTS,SMOKE,OPS,MODELS,TOTAL}_S (time limits,
# seconds), MAX_JOBS (default nproc), CUDA_HOME (default: found from nvcc).
set -uo pipefail

usage() { echo "usage: $0 [--dry-run] OUT_DIR" >&2; exit 64; }
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
[ $# -eq 1 ] || usage
mkdir -p "$1" || usage
OUT=$(cd "$1" && pwd)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 64
PY=${PY:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
START=$SECONDS
TOTAL_S=${GPU_CHECK_TOTAL_S:-470}
# The dry run's CPU stand-ins are not bound by the GPU session's minutes, only kept from hanging.
DRY_LIMIT_S=300
((DRY)) && TOTAL_S=${GPU_CHECK_TOTAL_S:-1800}
REPORT_RESERVE_S=10
STATUS=0
rm -f "$OUT"/{env.txt,build.log,tests.log,tests.xml,bench.log,bench.json,bench.md,summary.txt}
: >"$WORK/stages.tsv"

say() { echo "gpu_check: $*"; }

record() {  # name status seconds limit command (one line of stages.tsv: no newlines or tabs in it)
  local command=${5//$'\n'/ }
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${command//$'\t'/ }" >>"$WORK/stages.tsv"
  say "$1: $2 (${3} s)"
}

# run_stage NAME LIMIT_S LOG BIT -- COMMAND...: the command under `timeout`, output appended to LOG.
# The limit shrinks to what is left of the total. Returns the command's status.
run_stage() {
  local name=$1 limit=$2 log=$3 bit=$4 left t0 rc status
  shift 5
  left=$((TOTAL_S - REPORT_RESERVE_S - (SECONDS - START)))
  ((limit > left)) && limit=$left
  if ((limit < 10)); then
    record "$name" "skipped (out of time)" 0 "$limit" "$*"
    STATUS=$((STATUS | bit))
    return 1
  fi
  echo "+ [$name, limit ${limit} s] $*" | tee -a "$log"
  t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  case $rc in
    0) status=ok ;;
    124 | 137) status="TIMEOUT after ${limit} s" ;;
    *) status="FAILED (exit $rc)" ;;
  esac
  echo "+ [$name] $status" >>"$log"
  record "$name" "$status" $((SECONDS - t0)) "$limit" "$*"
  ((rc == 0)) || STATUS=$((STATUS | bit))
  return $rc
}

# A stage of the real run: in a dry run its command is only echoed (and a CPU stand-in may run).
gpu_only() {  # name log -- command...
  local name=$1 log=$2
  shift 3
  echo "+ [$name, GPU only; dry run: not run] $*" | tee -a "$log"
}

# ---- env ------------------------------------------------------------------------------------------
if ((DRY)); then
  say "DRY RUN: output to $OUT"
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} # the CPU stand-ins are tiny; spare a shared machine
else
  say "output to $OUT"
fi
# The toolkit root: /usr/local/cuda when it has nvcc (as tools/cuda_check.sh), else the nvcc on PATH.
if [ -z "${CUDA_HOME:-}" ]; then
  if [ -x /usr/local/cuda/bin/nvcc ]; then
    CUDA_HOME=/usr/local/cuda
  elif command -v nvcc >/dev/null; then
    CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
  fi
fi
if [ -n "${CUDA_HOME:-}" ]; then
  export CUDA_HOME
  export PATH="$CUDA_HOME/bin:$PATH"
fi
run_stage env 60 "$WORK/env.out" 32 -- "$PY" tools/gpu_check_report.py env "$OUT/env.txt" "$WORK/env.json"

# ---- build ----------------------------------------------------------------------------------------
JOBS=${MAX_JOBS:-$(nproc)}
if ((DRY)); then
  ARCH="<major.minor of torch.cuda.get_device_capability()>"
else
  ARCH=$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())' 2>>"$OUT/build.log")
fi
BUILD=(env ROIOPS_WITH_CUDA=1 "TORCH_CUDA_ARCH_LIST=$ARCH" "MAX_JOBS=$JOBS" "CUDA_HOME=${CUDA_HOME:-}"
  "$PY" setup.py build_ext --inplace)
# After the build: every CPU op has a CUDA kernel, and one kernel runs on this GPU (a build for the
# wrong architecture fails here with "no kernel image is available").
VERIFY=(bash -c "so=\$(ls -t roiops/_C*.so | head -n 1) && $PY tools/check_registrations.py \$so && $PY -c 'import torch, roiops
b = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=torch.float32, device=\"cuda\")
keep = roiops.nms(b, torch.tensor([0.9, 0.8, 0.7], device=\"cuda\"), 0.5)
assert keep.tolist() == [0, 2], keep
print(\"first CUDA kernel ran on\", torch.cuda.get_device_name())'")
BUILT=0
if ((DRY)); then
  gpu_only build "$OUT/build.log" -- "${BUILD[@]}"
  gpu_only build "$OUT/build.log" -- "${VERIFY[@]}"
  record build dry-run 0 "${GPU_CHECK_BUILD_S:-240}" "${BUILD[*]}"
elif [ -z "$ARCH" ] || [ -z "${CUDA_HOME:-}" ]; then
  say "build: no GPU seen by torch (arch '$ARCH') or no nvcc (CUDA_HOME '${CUDA_HOME:-}')" | tee -a "$OUT/build.log"
  record build "FAILED (no GPU or no nvcc)" 0 0 "${BUILD[*]}"
  STATUS=$((STATUS | 1))
elif run_stage build "${GPU_CHECK_BUILD_S:-240}" "$OUT/build.log" 1 -- "${BUILD[@]}"; then
  BUILT=1
  # A failure here is reported (bit 1) but stops nothing: the tests say which kernels are wrong.
  run_stage build-verify 30 "$OUT/build.log" 1 -- "${VERIFY[@]}"
fi

# ---- CUDA tests -------------------------------------------------------------------------------------
# pycocotools is absent on the GPU machines: modules that import it at the top cannot be collected,
# and one collection error would stop the whole session, so they are left out (none holds a CUDA
# test); any other collection error is reported without stopping the rest.
SIM=""
if ((DRY)); then
  # Collect as the GPU machine would: with an import of pycocotools that fails.
  SIM="$WORK/no_pycocotools"
  mkdir -p "$SIM"
  echo 'raise ImportError("pycocotools is absent (simulated by gpu_check --dry-run)")' >"$SIM/pycocotools.py"
fi
IGNORE=()
if ! PYTHONPATH="${SIM:+$SIM:}$PYTHONPATH" "$PY" -c "import pycocotools" 2>/dev/null; then
  while IFS= read -r f; do IGNORE+=("--ignore=$f"); done < <(grep -rlE '^(from|import) pycocotools' tests --include='*.py' | sort)
fi
TESTS_S=${GPU_CHECK_TESTS_S:-80}
PYTEST=("$PY" -m pytest tests -m cuda -p gpu_check_pytest -p no:cacheprovider --hypothesis-profile=ci
  --continue-on-collection-errors ${IGNORE[@]+"${IGNORE[@]}"})
if ((DRY)); then
  gpu_only tests "$OUT/tests.log" -- "${PYTEST[@]}" -v -rA --durations=15 --junitxml="$OUT/tests.xml"
  run_stage tests-collect $DRY_LIMIT_S "$OUT/tests.log" 2 -- \
    env "PYTHONPATH=$ROOT/tools:$SIM:$PYTHONPATH" "${PYTEST[@]}" --collect-only -q
elif ((BUILT)); then
  # The plugin stops the session 15 s before the limit, so that the summary and XML get written.
  run_stage tests "$TESTS_S" "$OUT/tests.log" 2 -- env "PYTHONPATH=$ROOT/tools:$PYTHONPATH" \
    "GPU_CHECK_PYTEST_SECONDS=$((TESTS_S - 15))" "${PYTEST[@]}" -v -rA --durations=15 --junitxml="$OUT/tests.xml"
else
  record tests "skipped (no build)" 0 "$TESTS_S" "${PYTEST[*]}"
fi

# ---- maskzoo smoke ----------------------------------------------------------------------------------
SMOKE=("$PY" tools/gpu_smoke.py --json "$WORK/smoke.json")
if ((DRY)); then
  gpu_only smoke "$OUT/tests.log" -- "${SMOKE[@]}"
  run_stage smoke-cpu $DRY_LIMIT_S "$OUT/tests.log" 4 -- "${SMOKE[@]}" --device cpu --tiny
elif ((BUILT)); then
  run_stage smoke "${GPU_CHECK_SMOKE_S:-45}" "$OUT/tests.log" 4 -- "${SMOKE[@]}"
else
  record smoke "skipped (no build)" 0 0 "${SMOKE[*]}"
fi

# ---- benchmarks -------------------------------------------------------------------------------------
OPS=("$PY" benchmarks/bench_cuda.py --json "$WORK/ops.json")
MODELS=("$PY" benchmarks/bench_models_cuda.py --json "$WORK/models.json")
if ((DRY)); then
  gpu_only ops "$OUT/bench.log" -- "${OPS[@]}"
  run_stage ops-cpu $DRY_LIMIT_S "$OUT/bench.log" 8 -- "${OPS[@]}" --device cpu --tiny
  gpu_only models "$OUT/bench.log" -- "${MODELS[@]}"
  run_stage models-cpu $DRY_LIMIT_S "$OUT/bench.log" 16 -- "${MODELS[@]}" --device cpu --tiny
elif ((BUILT)); then
  run_stage ops "${GPU_CHECK_OPS_S:-70}" "$OUT/bench.log" 8 -- "${OPS[@]}"
  run_stage models "${GPU_CHECK_MODELS_S:-50}" "$OUT/bench.log" 16 -- "${MODELS[@]}"
else
  record ops "skipped (no build)" 0 0 "${OPS[*]}"
  record models "skipped (no build)" 0 0 "${MODELS[*]}"
fi

# ---- report -----------------------------------------------------------------------------------------
REPORT=("$PY" tools/gpu_check_report.py report --out "$OUT" --work "$WORK" --total-seconds $((SECONDS - START)))
((DRY)) && REPORT+=(--dry-run)
"${REPORT[@]}" || STATUS=$((STATUS | 32))
for log in build.log tests.log bench.log; do
  if [ -s "$OUT/$log" ] && grep -qE 'FAILED \(exit|TIMEOUT after' "$OUT/$log"; then
    echo "---- last lines of $log ----"
    tail -n 25 "$OUT/$log"
  fi
done
say "exit status $STATUS (1 build, 2 tests, 4 smoke, 8 op benchmarks, 16 model benchmarks, 32 env/report)"
exit "$STATUS"
