"""Detectron2 model-zoo ``.pkl`` files, read with an unpickler that can only build numpy arrays.

A pickle names the Python callables that rebuild its objects, and ``pickle.load`` calls them: any
pickle can run any code. The zoo's files hold ``{"model": {name: numpy array}, "__author__": str,
...}``, so :func:`read_pickle_file` admits exactly what numpy needs to rebuild arrays and dtypes
(``numpy.core.multiarray._reconstruct`` / ``scalar``, ``numpy.ndarray``, ``numpy.dtype``, the
buffer helper ``_frombuffer`` of protocol 5, and ``_codecs.encode``, with which protocol 2 stores
bytes) plus ``collections.OrderedDict``. Every other global is refused with a
:class:`~maskzoo.checkpoint.errors.CheckpointError` naming it, before anything is called.
Arrays of dtype ``object`` are refused too: a weight is a number.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
from typing import Any

import numpy as np

from maskzoo.checkpoint.errors import CheckpointError

__all__ = ["ALLOWED_GLOBALS", "is_plain_pickle", "read_pickle_file"]

# (module, name) -> the object; numpy 2 moved numpy.core to numpy._core, files name either.
_NUMPY_CORE = getattr(np, "_core", None) or np.core  # numpy >= 2 has _core; np.core warns there
ALLOWED_GLOBALS = {
    **{
        (module, "_reconstruct"): _NUMPY_CORE.multiarray._reconstruct
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    },
    **{
        (module, "scalar"): _NUMPY_CORE.multiarray.scalar
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    },
    **{
        (module, "_frombuffer"): _NUMPY_CORE.numeric._frombuffer
        for module in ("numpy.core.numeric", "numpy._core.numeric")
    },
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): __import__("codecs").encode,
    ("collections", "OrderedDict"): collections.OrderedDict,
}

# torch.save's legacy (pre-zip) format begins with a pickled magic number: such files go to torch.
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, what: str):
        super().__init__(file, encoding="latin1")  # files written by Python 2 hold byte strings
        self.what = what

    def find_class(self, module: str, name: str):
        found = ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise CheckpointError(
                f"{self.what}: the pickle refers to the global {module}.{name}, which a weights file "
                "does not need; maskzoo only rebuilds numpy arrays and plain containers from a .pkl "
                "(a pickle can run code: refused unread)"
            )
        return found

    def persistent_load(self, pid):
        raise CheckpointError(f"{self.what}: a pickle with persistent ids (not a model-zoo .pkl file)")


def is_plain_pickle(path: str | os.PathLike) -> bool:
    """True for a pickle (protocol >= 2) that is not a legacy ``torch.save`` file."""
    with open(path, "rb") as f:
        head = f.read(len(_TORCH_LEGACY_MAGIC))
    return (
        head[:1] == b"\x80"
        and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
        and head != _TORCH_LEGACY_MAGIC
    )


def _check_arrays(obj: Any, what: str) -> None:
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject:
        raise CheckpointError(f"{what}: holds an array of Python objects, not numbers")
    if isinstance(obj, dict):
        for v in obj.values():
            _check_arrays(v, what)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _check_arrays(v, what)


def read_pickle_file(path: str | os.PathLike) -> Any:
    """The object in a ``.pkl`` file, rebuilt from numpy arrays, numbers, strings and containers only.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the pickle names any other global (the message names it), is truncated or
            malformed, or holds object arrays.
    """
    path = os.fspath(path)
    what = f"checkpoint {path!r}"
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} does not exist")
    with open(path, "rb") as f:
        data = f.read()
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(data), what).load()
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{what}: not a readable pickle ({type(e).__name__}: {e})") from e
    _check_arrays(obj, what)
    return obj
