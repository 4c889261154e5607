#!/usr/bin/env bash
# Compile-checks the CUDA build of roiops._C on a machine without a GPU: builds the whole extension
# with ROIOPS_WITH_CUDA=1 into build/cuda-check, then loads it and checks that every roiops op with
# a CPU kernel has a CUDA kernel too.
set -euo pipefail
PY=${PY:-python3}
if [ -z "${CUDA_HOME:-}" ]; then
  if [ -x /usr/local/cuda/bin/nvcc ]; then
    CUDA_HOME=/usr/local/cuda
  else
    nvcc_path=$(command -v nvcc) || { echo "cuda-check: nvcc not found; set CUDA_HOME" >&2; exit 1; }
    CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$nvcc_path")")")
  fi
fi
export CUDA_HOME
export PATH="$CUDA_HOME/bin:$PATH"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-"8.0;9.0"}
export MAX_JOBS=${MAX_JOBS:-2}
echo "cuda-check: CUDA_HOME=$CUDA_HOME TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"
ROIOPS_WITH_CUDA=1 "$PY" setup.py -q build_ext \
  --build-lib build/cuda-check/lib --build-temp build/cuda-check/temp
"$PY" tools/check_registrations.py build/cuda-check/lib/roiops/_C*.so
