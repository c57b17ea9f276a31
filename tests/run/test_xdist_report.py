"""pytest-xdist end to end on the tiny checkpoint: `pytest -n 2` gives the same verdicts, metrics
and one merged results.json as `pytest`; `--update-golden -n 2` writes every golden once.

The inner runs are subprocesses (xdist starts worker processes) with one thread each, so two
workers fit two cores; each scenario runs once per session (tests/run/conftest.py) and the tests
read its artifacts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from run_support import XdistCheck, XdistUpdate

# whole-system runs (xdist workers, a browser): .ci/run runs them, the quick loop leaves them out
pytestmark = pytest.mark.slow

PER_RECORD = ("outcome", "verdict", "passed", "metrics", "checks", "budget_checks", "checkpoint", "case", "seed",
              "render", "golden")


def by_id(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {record["id"]: record for record in document["results"]}


def digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_two_workers_give_the_same_verdicts_and_one_merged_report(xdist_check: XdistCheck) -> None:
    root = xdist_check.root
    # the goldens of every case are written; the strict candidate fails already
    assert [(r.case.case.id, r.passed) for r in xdist_check.update] == [("red-circle", True)] * 3 + [("strict", False)]

    serial, parallel = xdist_check.serial, xdist_check.parallel
    serial.assert_outcomes(passed=3, failed=1)
    parallel.assert_outcomes(passed=3, failed=1)
    # the controller names the failure, as a plain run does
    parallel.stdout.fnmatch_lines(["*tiny-strict-s0: image-failed: PSNR * dB < min 150.00 dB*"])

    one, two = xdist_check.results("serial"), xdist_check.results("xdist")
    assert one["summary"] == two["summary"] == {"total": 4, "passed": 3, "failed": 1,
                                                "verdicts": {"image-failed": 1, "passed": 3}}
    assert [r["id"] for r in one["results"]] == [r["id"] for r in two["results"]]  # configuration order
    a, b = by_id(one), by_id(two)
    for test_id in a:
        for key in PER_RECORD:  # renders are deterministic: metrics are equal, not just close
            assert a[test_id][key] == b[test_id][key], f"{test_id}: {key} differs under xdist"
    assert {r["worker"] for r in one["results"]} == {None}
    assert {r["worker"] for r in two["results"]} == {"gw0", "gw1"}  # both workers ran tests

    # one results.json per run, written by the controller; every record's images are in that folder
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("results.json")) == [
        "refused/results.json", "serial/results.json", "xdist/results.json"]
    for record in two["results"]:
        for name in ("golden", "candidate", "diff"):
            assert (root / "xdist" / record["images"][name]).is_file(), (record["id"], name)


def test_update_golden_with_two_workers_writes_every_golden_once(xdist_update: XdistUpdate) -> None:
    root = xdist_update.root
    golden = xdist_update.first_golden  # as the first parallel update left it

    first = xdist_update.first
    first.assert_outcomes(passed=4)
    document = xdist_update.results("first")
    assert document["summary"] == {"total": 4, "passed": 4, "failed": 0, "verdicts": {"updated": 4}}
    assert {r["worker"] for r in document["results"]} == {"gw0", "gw1"}
    stems = [f"tiny/red-circle-s{seed}" for seed in range(4)]
    assert sorted(digests(golden)) == sorted(f"{s}{suffix}" for s in stems
                                             for suffix in (".expected.yml", ".json", ".png"))
    written = digests(golden)
    for stem in stems:  # each sidecar describes its own PNG: no worker overwrote another's golden
        meta = json.loads((golden / f"{stem}.json").read_text())
        assert meta["image_sha256"] == hashlib.sha256((golden / f"{stem}.png").read_bytes()).hexdigest()

    # a second parallel update compares each render with its golden and leaves every file untouched
    again = xdist_update.again
    again.assert_outcomes(passed=4)
    assert digests(root / "golden") == written
    assert xdist_update.results("again")["summary"]["verdicts"] == {"updated": 4}

    # the run's golden counts, summed over the workers, as a plain `--update-golden` prints them
    first.stdout.fnmatch_lines(["quant_guard: goldens 4 created, 0 updated, 0 unchanged"])
    again.stdout.fnmatch_lines(["quant_guard: goldens 0 created, 0 updated, 4 unchanged"])
