"""pytest-benchmark settings for the kernel microbenchmarks (bench_roi_align, _nms, _boxes, _masks).

Each case is parametrised over ``impl`` (roiops, torchvision, sometimes a third way of doing the
same thing) and sets ``benchmark.group`` to the case, so the implementations of a case are timed
side by side in one group. Everything runs in this one process, under one allocator setting and
the caller's torch thread count; both are written into the run's machine_info, so
``--benchmark-compare`` warns when two runs were made under different settings.

    pytest benchmarks --benchmark-only                     # threads as OMP_NUM_THREADS / torch set them
    pytest benchmarks --benchmark-only --threads 1 --benchmark-autosave
"""

import pytest
import torch
import torchvision
from _common import keep_freed_memory

# Scripts, not pytest-benchmark modules (see the README's benchmark section for why).
collect_ignore = ["bench_cuda.py", "bench_models.py"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("roiops benchmarks")
    group.addoption("--threads", type=int, default=None,
                    help="torch.set_num_threads(N) before any case runs (default: torch's own choice, "
                         "which follows OMP_NUM_THREADS)")
    group.addoption("--allocator", choices=["kept", "default"], default="kept",
                    help="kept: freed memory stays in the process (see _common.keep_freed_memory); "
                         "default: glibc's defaults")


def pytest_configure(config: pytest.Config) -> None:
    # Before any case allocates: mallopt changes how later allocations are served.
    if config.getoption("--allocator") == "kept":
        keep_freed_memory()
    threads = config.getoption("--threads")
    if threads is not None:
        torch.set_num_threads(threads)


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    machine_info.update(
        torch=torch.__version__,
        torchvision=torchvision.__version__,
        torch_threads=torch.get_num_threads(),
        allocator=config.getoption("--allocator"),
    )
