"""The one atomic-write helper every file writer of the package uses."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from quant_guard.atomic import atomic_file, atomic_path, atomic_write


def test_a_written_file_is_readable_by_everyone_and_complete(tmp_path: Path) -> None:
    target = tmp_path / "golden.png"
    atomic_write(target, b"\x89PNG" * 100)
    assert target.read_bytes() == b"\x89PNG" * 100
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["golden.png"]


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
