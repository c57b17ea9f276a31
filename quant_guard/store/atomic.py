"""Atomic file writes: a temporary file in the destination's folder, flushed to disk, then
renamed over the destination. A reader sees the old file or the new one, never half of one; a
killed writer leaves at most a hidden ``.<name>.*.tmp`` file beside it (the golden store sweeps
old ones)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO



def file_mode() -> int:
    """The mode ``open()`` would give a new file under the process's umask (0o644 under the usual
    022): mkstemp creates 0600, which would hide goldens and DiT files from a team's group."""
    umask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(dest: Path, *, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path next to ``dest`` for a writer that wants a file name (e.g.
    ``safetensors.torch.save_file``); renamed over ``dest`` when the block succeeds, removed
    when it raises. ``suffix`` for a writer that reads its file back by type (".tmp.safetensors")."""
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_file(dest: Path) -> Iterator[BinaryIO]:
    """A binary file object whose content replaces ``dest`` when the block succeeds."""
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        yield f


def atomic_write(dest: Path, data: bytes) -> None:
    with atomic_file(dest) as f:
        f.write(data)
