"""Writing files so that a reader sees the old version or the new one, never half of one.

Everything fedsilo keeps (run folders, checkpoints, reports, caches, released data) is written
through :func:`atomic_open`: the bytes go to a temporary file in the same folder, are flushed and
fsync'ed, and the temporary file is renamed over the target (``os.replace`` is atomic on POSIX
and Windows). A crash mid-write leaves the previous file intact.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch


def _file_mode() -> int:
    """Permissions of new files under the process umask (mkstemp would give 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: int | None = None) -> Iterator[IO[bytes]]:
    """A binary file handle whose contents replace ``path`` atomically when the block ends.

    Parameters
    ----------
    path
        The file to write (parent folders are created).
    mode
        Permissions of the file (default: as the umask allows, like ``open``).

    If the block raises, ``path`` is untouched and the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _file_mode() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, mode) as fh:
        fh.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through :func:`atomic_write_bytes`."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


__all__ = ["atomic_open", "atomic_torch_save", "atomic_write_bytes", "atomic_write_text"]
