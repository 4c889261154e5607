"""Loads the compiled extension roiops._C, or says exactly how to build it."""

import importlib

_BUILD_HINT = (
    "roiops' native extension roiops._C is not built (or was built against another torch). "
    "Build it from the repository root with `make build` (or "
    "`pip install --no-build-isolation -e .` in an environment that already has torch; "
    "set ROIOPS_WITH_CUDA=1 to include the CUDA kernels)."
)


def load() -> None:
    try:
        importlib.import_module("roiops._C")
    except ImportError as exc:
        raise ImportError(f"{_BUILD_HINT}\nOriginal error: {exc}") from exc


def has_cuda_kernels() -> bool:
    """True when this build of roiops._C contains the CUDA kernels."""
    import torch

    return torch._C._dispatch_has_kernel_for_dispatch_key("roiops::box_iou", "CUDA")
