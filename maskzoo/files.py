"""Every file maskzoo writes goes through :func:`write_atomic`.

A reader (another process, or this one after a crash or power cut) then sees either the file's
old bytes or all of the new ones, never a torn file: checkpoints, training states, metrics, COCO
result files, pictures and the shapes data set alike.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import BinaryIO

__all__ = ["write_atomic"]


def write_atomic(path: str | os.PathLike, content: bytes | str | Callable[[BinaryIO], object]) -> None:
    """Writes ``content`` to ``path`` so that ``path`` holds either its old bytes or all of the new.

    Args:
        path: destination file; replaced if it exists. Its folder must exist.
        content: the bytes, a text (written as UTF-8), or a function that writes the contents
            to the binary file object it is given (``torch.save``, ``PIL.Image.save``, ...), so
            large files are not first assembled in memory.

    The contents go to a temporary file in the destination's folder (a rename is only atomic
    within one file system), are flushed to disk (fsync), and only then renamed over ``path``
    (``os.replace``, atomic on POSIX and Windows); last, the folder itself is synced, because the
    rename lives in the folder and a power cut could otherwise undo it. On any error the temporary
    file is removed and the error propagates; ``path`` is untouched.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp")
    # Created like open(path, "wb") would (mode 0o666 less the umask; tempfile.mkstemp would make
    # it 0o600), and exclusively, so two writers never share a temporary file.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(content, str):
                f.write(content.encode("utf-8"))
            elif isinstance(content, (bytes, bytearray, memoryview)):
                f.write(content)
            else:
                content(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _sync_folder(folder)


def _sync_folder(folder: str) -> None:
    if not hasattr(os, "O_DIRECTORY"):  # Windows: folders cannot be opened, and need no sync
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
