"""The one atomic-write helper every file writer of the package uses."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from quant_guard.store.atomic import atomic_file, atomic_path, atomic_write


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_a_written_file_is_complete_with_the_mode_the_umask_gives(tmp_path: Path, umask: int, mode: int) -> None:
    """Like a plain open(): readable by everyone under the usual umask 022, by the group under a
    team's 002, by the owner only under 077 (mkstemp alone would give 0600 whatever the umask)."""
    target = tmp_path / "golden.png"
    old = os.umask(umask)
    try:
        atomic_write(target, b"\x89PNG" * 100)
        with atomic_path(tmp_path / "dit.safetensors") as tmp:
            tmp.write_bytes(b"weights")
    finally:
        os.umask(old)
    assert target.read_bytes() == b"\x89PNG" * 100
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()} == {"golden.png": mode,
                                                                                    "dit.safetensors": mode}


def test_a_writer_that_fails_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "dit.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    with pytest.raises(ValueError), atomic_file(target) as f:
        f.write(b"half")
        raise ValueError
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["dit.safetensors"]


def test_a_path_writer_replaces_the_file_when_it_succeeds(tmp_path: Path) -> None:
    target = tmp_path / "weights.pth"
    target.write_bytes(b"old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".weights.pth.")
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
