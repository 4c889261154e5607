"""Builds roiops._C from csrc/: the C++ CPU kernels always, the CUDA kernels when asked for.

ROIOPS_WITH_CUDA=1 forces the CUDA sources in, ROIOPS_WITH_CUDA=0 keeps them out; unset, they are
built when torch sees a GPU and nvcc is found. ROIOPS_CPU_ARCH sets the -march of the CPU kernels
(default "native": this is a source build for the machine it runs on; use e.g. "x86-64-v3" to build
for other machines).
"""

import glob
import os
import sys

from setuptools import setup

import torch
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _with_cuda() -> bool:
    forced = os.environ.get("ROIOPS_WITH_CUDA")
    if forced is not None:
        if forced not in ("0", "1"):
            sys.exit(f"ROIOPS_WITH_CUDA must be 0 or 1, got {forced!r}")
        return forced == "1"
    return torch.cuda.is_available() and cpp_extension.CUDA_HOME is not None


def _torch_openmp_link_args() -> list[str]:
    # Link the OpenMP runtime torch itself loaded: a second libgomp would run its own thread pool
    # that torch.set_num_threads does not control.
    torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    bundled = sorted(glob.glob(os.path.join(torch_lib, "libgomp*.so*")))
    if bundled:
        return [bundled[0], f"-Wl,-rpath,{torch_lib}"]
    return ["-fopenmp"]


def _cuda_include_dirs() -> list[str]:
    # torch's CUDA headers include cusparse.h & co, which the nvidia wheels keep in nvidia/cu*/include.
    dirs = []
    for site in {os.path.dirname(os.path.dirname(torch.__file__))}:
        dirs += sorted(glob.glob(os.path.join(site, "nvidia", "cu*", "include")))
        dirs += sorted(glob.glob(os.path.join(site, "nvidia", "*", "include")))
    return dirs


def extensions():
    with_cuda = _with_cuda()
    sources = [os.path.join("csrc", "roiops.cpp")] + sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    march = os.environ.get("ROIOPS_CPU_ARCH", "native")
    # -fno-trapping-math: nothing here unmasks floating-point traps, and without it GCC will not
    # execute a division or product that a select discards, so a loop whose formula has such a
    # select (box_iou's iou = areas > 0 ? inter / union : 0) is left scalar where the CPU has no
    # masked arithmetic (AVX2). Values are IEEE's either way; Inductor builds with the same flag.
    cxx_flags = ["-O3", "-fopenmp", f"-march={march}", "-fno-math-errno", "-fno-trapping-math"]
    define_macros = []
    include_dirs = [os.path.join(ROOT, "csrc")]
    extra = {"cxx": cxx_flags}
    if with_cuda:
        sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
        define_macros.append(("ROIOPS_WITH_CUDA", None))
        include_dirs += _cuda_include_dirs()
        extra["nvcc"] = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
        ext_cls = cpp_extension.CUDAExtension
    else:
        ext_cls = cpp_extension.CppExtension
    return [
        ext_cls(
            "roiops._C",
            sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args=extra,
            extra_link_args=_torch_openmp_link_args(),
            py_limited_api=True,
        )
    ]


setup(
    ext_modules=extensions(),
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
