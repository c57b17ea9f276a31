"""The report from real runs on the tiny checkpoint (fresh pytest processes, see
``quant_guard.tools.report_demo``): results.json on every run, index.html by policy, xdist workers
merged by the controller, pytest-html extras on failing tests, the terminal summary."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from quant_guard.tools.report_demo import HOSTILE_PROMPT, shared_demo_report

FAILING = ["tiny-damaged-red-circle-blue-s0", "tiny-damaged-red-circle-blue-s1", "tiny-damaged-hostile-prompt-s0"]
PASSING = ["tiny-red-circle-blue-s0", "tiny-red-circle-blue-s1"]


@dataclass(frozen=True)
class Demo:
    root: Path
    status: int
    output: str

    @property
    def report(self) -> Path:
        return self.root / "qg-report"

    def results(self) -> dict[str, Any]:
        return json.loads((self.report / "results.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    return Demo(*shared_demo_report(tmp_path_factory.getbasetemp()))


def _copy(demo: Demo, dest: Path) -> Path:
    """The demo project with its goldens, without any report."""
    shutil.copytree(demo.root, dest, ignore=shutil.ignore_patterns("qg-report", "report.html", "assets",
                                                                   "check-run.json"))
    return dest


@pytest.mark.slow  # reads the demo report: fresh pytest processes on 2 xdist workers
def test_results_json_describes_every_visual_test(demo: Demo) -> None:
    assert demo.status == 1, demo.output
    data = demo.results()
    assert data["summary"] == {"total": 5, "passed": 2, "failed": 3, "verdicts": {"image-failed": 3, "passed": 2}}
    records = {r["id"]: r for r in data["results"]}
    assert list(records) == PASSING + FAILING[:2] + FAILING[2:]  # declaration order
    for test_id, r in records.items():
        assert r["verdict"] == ("passed" if test_id in PASSING else "image-failed")
        assert r["scheme"] == "float8_e4m3fn" and r["render"]["steps"] == 8
        # the tiny checkpoint's scorecard limits beside LPIPS/SSIM/PSNR (the drift check's comparison for a failure)
        assert {c["metric"] for c in r["checks"]} == {"LPIPS", "SSIM", "PSNR", "ΔE p95", "sharpness"}
        card = r["scorecard"]
        assert card["words"].startswith("colour: ΔE mean ") and card["artifacts"]["kind"] == "LPIPS"
        assert (card["colour"]["delta_e_p95"] > 2.0) == failing_case(test_id)  # the rounded weights move colour
        assert len(r["candidate_render"]["step_times_s"]) == 8 and r["candidate_render"]["memory"]["kind"] == "cpu-rss"
        # a failing case also has the bf16 reference of the drift check, rendered in the same run
        failing = test_id not in PASSING
        assert set(r["images"]) == {"golden", "candidate", "diff"} | ({"reference"} if failing else set())
        assert (r["drift"] is not None) == failing
        for path in r["images"].values():
            assert not Path(path).is_absolute() and (demo.report / path).is_file()
        assert r["golden"]["environment"]["device"] == "cpu" and r["golden"]["image_sha256"]
        env = r["environment"]
        assert env["device"] == "cpu" and env["torch"] and env["diffsynth"]
        assert env["checkpoint_hashes"]["dit"] == r["golden"]["checkpoint_hashes"]["dit"]
        assert ("dit@float8_e4m3fn" in env["checkpoint_hashes"]) == r["checkpoint"].endswith("damaged")
    assert records[FAILING[2]]["prompt"] == HOSTILE_PROMPT
    assert "\n  in words: colour: ΔE mean " in records[FAILING[0]]["reason"]


def failing_case(test_id: str) -> bool:
    return test_id not in PASSING


@pytest.mark.slow  # reads the demo report: fresh pytest processes on 2 xdist workers
def test_failed_run_writes_the_html_report_and_prints_its_path(demo: Demo) -> None:
    page = (demo.report / "index.html").read_text(encoding="utf-8")
    assert html.escape(HOSTILE_PROMPT, quote=False) in page and HOSTILE_PROMPT not in page
    positions = [page.index(f'id="case-{test_id}"') for test_id in FAILING + PASSING]
    assert positions == sorted(positions)  # failing cases first
    lines = demo.output.splitlines()
    report_line = next(i for i, line in enumerate(lines) if line == "quant_guard report: qg-report/index.html")
    failure_lines = [i for i, line in enumerate(lines) if line.startswith(tuple(f"{t}: image-failed" for t in FAILING))]
    assert len(failure_lines) == 3 and max(failure_lines) < report_line
    assert "quant_guard results: qg-report/results.json" in lines
    assert "report incomplete" not in demo.output
    # the scorecard of every case, and the stability table's anomalies per dimension
    assert page.count("scorecard: how the candidate differs") == len(FAILING + PASSING)
    assert "<th>Colour collapse</th>" in page and "<th>Meaning lost</th>" in page


@pytest.mark.slow  # reads the demo report: fresh pytest processes on 2 xdist workers
def test_pytest_html_gets_the_difference_image_and_metrics_of_failing_tests(demo: Demo) -> None:
    page = (demo.root / "report.html").read_text(encoding="utf-8")
    blob = json.loads(html.unescape(re.search(r'data-jsonblob="([^"]*)"', page).group(1)))  # type: ignore[union-attr]
    extras = {nodeid: [e for report in reports for e in report.get("extras", [])]
              for nodeid, reports in blob["tests"].items()}
    for nodeid, items in extras.items():
        if any(t in nodeid for t in PASSING):
            assert items == []
        else:
            names = [e["name"] for e in items if e["format_type"] == "image"]
            assert names == ["difference x4 (quant_guard)", "candidate (quant_guard)"]
            (table,) = [e["content"] for e in items if e["format_type"] == "html"]
            assert "SSIM" in table and "FAIL" in table and "<script" not in table
            assert all((demo.root / e["content"]).is_file() for e in items if e["format_type"] == "image")


@pytest.mark.slow  # reads the demo report: fresh pytest processes on 2 xdist workers
def test_xdist_workers_send_their_records_to_the_controller(demo: Demo) -> None:
    pytest.importorskip("xdist")  # the demo's check ran on 2 workers
    records = demo.results()["results"]
    assert len(records) == 5 and {r["worker"] for r in records} == {"gw0", "gw1"}
    assert demo.output.count("quant_guard report: qg-report/index.html") == 1
    # the controller has no results of its own: its failure lines come from the merged records
    assert "tiny-damaged-red-circle-blue-s0: image-failed: LPIPS " in demo.output


@pytest.mark.slow  # reads the demo report: fresh pytest processes on 2 xdist workers
def test_html_policy_failed_all_none(demo: Demo, pytester: pytest.Pytester, _heavy_modules: None) -> None:
    # in-process runs (torch stays imported: see conftest's _heavy_modules), in a copy of the demo
    root = _copy(demo, pytester.path / "project")
    pytester.chdir()
    os.chdir(root)
    (root / "qg-report").mkdir()
    (root / "qg-report" / "index.html").write_text("a stale report of an earlier run")
    passing = pytester.runpytest("-p", "no:cacheprovider", "-k", "tiny-red-circle-blue-s0")
    passing.assert_outcomes(passed=1)
    assert not (root / "qg-report" / "index.html").exists()  # nothing failed: no report, and no stale one
    assert [r["id"] for r in json.loads((root / "qg-report" / "results.json").read_text())["results"]] == PASSING[:1]
    passing.stdout.fnmatch_lines(["quant_guard results: qg-report/results.json"])

    with (root / "pyproject.toml").open("a", encoding="utf-8") as f:
        f.write('\n[tool.pytest.ini_options]\nqg_report = "all"\n')
    pytester.runpytest("-p", "no:cacheprovider", "-k", "tiny-red-circle-blue-s0").assert_outcomes(passed=1)
    assert (root / "qg-report" / "index.html").is_file()

    failing = pytester.runpytest("-p", "no:cacheprovider", "--qg-report=none", "-k", "tiny-damaged-red-circle-blue-s0")
    failing.assert_outcomes(failed=1)
    assert not (root / "qg-report" / "index.html").exists()
    assert json.loads((root / "qg-report" / "results.json").read_text())["summary"]["failed"] == 1


def test_report_option_is_documented_and_validated(pytester: pytest.Pytester) -> None:
    pytester.runpytest("--help").stdout.fnmatch_lines(["*--qg-report=WHEN*", "*qg_report (string)*"])
    bad = pytester.runpytest("--qg-report=sometimes")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--qg-report must be one of failed, all, none*"])
    pytester.makeini("[pytest]\nqg_report = sometimes\n")
    bad_ini = pytester.runpytest()
    assert bad_ini.ret == pytest.ExitCode.USAGE_ERROR
    bad_ini.stderr.fnmatch_lines(["*ini option qg_report must be one of failed, all, none*"])


def test_a_report_that_cannot_be_written_is_reported_not_raised(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from quant_guard.run.report_hooks import ReportPlugin

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    config = SimpleNamespace(source=tmp_path / "pyproject.toml", checkpoints=(), cases=())
    session = SimpleNamespace(report_dir=blocker / "qg-report", config=config, results=[], history_dir=None)
    plugin = ReportPlugin(None, session, "all")  # type: ignore[arg-type]
    plugin.add_worker_output({"records": [{"id": "x", "outcome": "failed", "passed": False}], "errors": ["gw1: boom"]})
    plugin.write()
    assert len(plugin.errors) == 2 and plugin.errors[0] == "gw1: boom"
    assert plugin.errors[1].startswith(("FileExistsError", "NotADirectoryError")), plugin.errors
    assert plugin.written == {}
