"""Process-level runtime settings for long CPU jobs (training, evaluation, prediction).

:func:`keep_freed_memory` tells glibc's allocator to keep freed memory in the process instead of
returning it to the system. Detection models allocate and free the same large temporaries (feature
maps, RoI features, pasted masks) on every call; by default glibc serves blocks over 128 KiB-32 MiB
with fresh ``mmap`` calls and unmaps them when freed, so each call pays the page faults of
touching that memory again (easily 10-30 % of a CPU forward pass). With ``M_MMAP_MAX = 0`` large
blocks come from the heap, and a large ``M_TRIM_THRESHOLD`` stops the heap from being trimmed
back after each call. The cost: the process keeps its peak memory until it exits.

The CLI applies it for ``train``, ``eval``, ``predict`` and ``demo`` unless ``--no-keep-freed-memory``.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["keep_freed_memory"]

# From glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_THRESHOLD_BYTES = 1 << 30  # keep up to 1 GiB of free heap before trimming


def keep_freed_memory() -> bool:
    """Switch glibc malloc to keep freed memory (see the module doc). Returns True when applied,
    False where there is no glibc (macOS, musl, Windows): then nothing changes."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok_mmap = mallopt(_M_MMAP_MAX, 0) == 1
    ok_trim = mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES) == 1
    return ok_mmap and ok_trim
