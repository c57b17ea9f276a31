"""Bad input and faults: ``--update-golden`` killed mid-run, and two xdist workers
updating goldens at once. No golden is ever half written, lost or trusted when its files come
from different updates, and a rerun completes. See test_faults.py for the other faults.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import gradient, install_goldens
from run_support import XdistUpdate
from quant_guard.store.golden import STALE_TEMPORARY_S, GoldenCorrupt, GoldenKey, GoldenStore, atomic_write
from quant_guard.judge.metrics import ImageMetrics


# ---- --update-golden killed mid-run ----------------------------------------------------------

def _metrics(value: float) -> ImageMetrics:
    return ImageMetrics(lpips=value, ssim=1 - value, psnr=40 - value)


def test_interrupted_atomic_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--update-golden killed mid-run, inside one write: interrupted between the temporary
    file and the rename (Ctrl-C here), the old file is intact and no temporary file is left."""
    import quant_guard.store.atomic as atomic

    target = tmp_path / "x.png"
    target.write_bytes(b"old")

    def interrupted(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, b"new" * 1000)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]


@pytest.mark.parametrize("existing", [False, True], ids=["new-golden", "updated-golden"])
@pytest.mark.parametrize("crash_before", ["sidecar", "expected"])
def test_crash_between_golden_files_is_not_trusted_and_a_rerun_repairs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool, crash_before: str) -> None:
    """--update-golden killed mid-run, between files: a failure injected after the PNG
    (before its sidecar) leaves a golden that is not trusted; after the sidecar (before the
    expected metrics) a trusted golden with no expected metrics, never the previous golden's.
    Writing again (the rerun) gives a consistent golden."""
    import quant_guard.store.golden as golden

    store = GoldenStore(tmp_path / "golden")
    key = GoldenKey("tiny", "case", 0)
    old, new = gradient(), np.roll(gradient(), 5, axis=0)
    if existing:
        store.write(key, old, {"prompt": "p"}, _metrics(0.01))
    real = golden.atomic_write
    crash_at = store.sidecar_path(key) if crash_before == "sidecar" else store.expected_path(key)

    def crashing(path: Path, data: bytes) -> None:
        if path == crash_at:
            raise SystemExit("killed")
        real(path, data)

    monkeypatch.setattr(golden, "atomic_write", crashing)
    with pytest.raises(SystemExit):
        store.write(key, new, {"prompt": "p"}, _metrics(0.02))
    if crash_before == "sidecar":
        with pytest.raises(GoldenCorrupt, match="does not match its sidecar" if existing else "is missing"):
            store.load(key, width=64, height=64)
    else:
        assert np.array_equal(store.load(key, width=64, height=64).image, new)
    assert store.load_expected(key) is None  # the old metrics never pair with the new image
    monkeypatch.setattr(golden, "atomic_write", real)
    store.write(key, new, {"prompt": "p"}, _metrics(0.02))
    assert np.array_equal(store.load(key, width=64, height=64).image, new)
    assert store.load_expected(key) == _metrics(0.02)


def test_only_stale_temporary_files_are_removed(tmp_path: Path) -> None:
    """--update-golden killed mid-run, the leftovers: writing a golden removes temporary
    files that killed writes of its own files left (old ones only: a fresh one may belong to a
    write in progress), and nothing else."""
    store = GoldenStore(tmp_path / "golden")
    key = GoldenKey("tiny", "case", 0)
    folder = store.png_path(key).parent
    folder.mkdir(parents=True)
    old = [folder / ".case-s0.png.k1ll3d.tmp", folder / ".case-s0.json.k1ll3d.tmp"]
    kept = [folder / ".case-s0.png.1nfl1ght.tmp", folder / ".other-s0.png.k1ll3d.tmp", folder / "notes.tmp"]
    for path in old + kept:
        path.write_bytes(b"partial")
    for path in [*old, *kept[1:]]:
        os.utime(path, (time.time() - 2 * STALE_TEMPORARY_S,) * 2)
    store.write(key, gradient(), {"prompt": "p"}, None)
    assert not any(p.exists() for p in old)
    assert all(p.exists() for p in kept)


KILL_CONFTEST = '''
import os
import signal

# SIGKILL this pytest process right before the temporary file of QG_KILL_AT is renamed into
# place: the PNG of that golden is new, its sidecar is not, and nothing gets to clean up.
_replace = os.replace


def _replace_or_die(src, dst):
    if os.path.basename(dst) == os.environ.get("QG_KILL_AT"):
        os.kill(os.getpid(), signal.SIGKILL)
    return _replace(src, dst)


os.replace = _replace_or_die
'''


def _stray_files(folder: Path, seeds: range) -> list[str]:
    expected = {f"red-circle-s{s}{suffix}" for s in seeds for suffix in (".png", ".json", ".expected.yml")}
    return sorted(p.name for p in folder.iterdir() if p.name not in expected)


@pytest.mark.slow
def test_update_golden_killed_mid_run_then_rerun(pytester: pytest.Pytester, qg_project: Callable[..., Path],
                                                 baseline: Callable[..., Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """--update-golden killed mid-run: a real pytest process re-baselining three stale
    goldens is SIGKILLed between the second golden's PNG and its sidecar. No file is half
    written, the half-updated golden is not trusted, the leftover temporary file is never read
    (and a rerun removes it once it is stale), and a rerun of --update-golden completes."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    root = qg_project(seeds="[0, 1, 2]", steps=4)
    store = install_goldens(baseline(seeds="[0, 1, 2]", steps=4), root)
    qg_project(seeds="[0, 1, 2]", steps=6)  # every golden is now stale
    pytester.makeconftest(KILL_CONFTEST)
    monkeypatch.setenv("QG_KILL_AT", "red-circle-s1.json")
    killed = pytester.runpytest_subprocess("--update-golden", "-v")
    assert killed.ret == -9, killed.stdout.str()
    killed.stdout.fnmatch_lines(["*test_visual[[]tiny-red-circle-s0[]] PASSED*"])
    monkeypatch.delenv("QG_KILL_AT")

    folder = root / "golden" / "tiny"
    for seed in range(3):  # nothing half written: every image decodes, every sidecar parses
        with Image.open(folder / f"red-circle-s{seed}.png") as img:
            img.load()
        json.loads((folder / f"red-circle-s{seed}.json").read_text())
    assert store.load(GoldenKey("tiny", "red-circle", 0), width=64, height=64).metadata["steps"] == 6
    with pytest.raises(GoldenCorrupt, match="does not match its sidecar"):
        store.load(GoldenKey("tiny", "red-circle", 1), width=64, height=64)
    assert store.load_expected(GoldenKey("tiny", "red-circle", 1)) is None
    assert store.load(GoldenKey("tiny", "red-circle", 2), width=64, height=64).metadata["steps"] == 4
    leftovers = _stray_files(folder, range(3))
    assert leftovers and all(n.startswith(".red-circle-s1.json.") and n.endswith(".tmp") for n in leftovers)

    check = pytester.runpytest()  # the leftover temporary file is not a golden: never read
    check.assert_outcomes(passed=1, failed=2)
    check.stdout.fnmatch_lines(["*tiny-red-circle-s1: golden *red-circle-s1.png does not match its sidecar*",
                                "*tiny-red-circle-s2: golden *red-circle-s2.png is stale*"])
    for leftover in leftovers:  # as a later rerun finds it: older than any write in progress
        os.utime(folder / leftover, (time.time() - 2 * STALE_TEMPORARY_S,) * 2)
    rerun = pytester.runpytest("--update-golden")
    rerun.assert_outcomes(passed=3)
    rerun.stdout.fnmatch_lines(["quant_guard: goldens 0 created, 2 updated, 1 unchanged"])
    assert _stray_files(folder, range(3)) == []  # the rerun removed what the killed run left
    for seed in range(3):
        key = GoldenKey("tiny", "red-circle", seed)
        assert store.load(key, width=64, height=64).metadata["steps"] == 6
        assert store.load_expected(key) is not None


# ---- two xdist workers updating goldens -------------------------------------------------------

@pytest.mark.slow
def test_two_xdist_workers_update_goldens_without_loss(pytester: pytest.Pytester, qg_project: Callable[..., Path],
                                                       xdist_update: XdistUpdate) -> None:
    """Two xdist workers updating goldens: four goldens created by two workers at once are
    all there, complete and consistent, with no temporary file left, and they pass a check."""
    result = xdist_update.first
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["quant_guard: goldens 4 created, 0 updated, 0 unchanged"])  # summed over workers
    folder = xdist_update.first_golden / "tiny"
    assert _stray_files(folder, range(4)) == []
    store = GoldenStore(xdist_update.first_golden)
    for seed in range(4):
        key = GoldenKey("tiny", "red-circle", seed)
        assert store.load(key, width=64, height=64).metadata["seed"] == seed
        assert store.load_expected(key) is not None
    qg_project(seeds="[0, 1, 2, 3]", steps=2)  # the same project, checked in this process
    install_goldens(xdist_update.first_golden, pytester.path)
    pytester.runpytest().assert_outcomes(passed=4)
