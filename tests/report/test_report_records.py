"""results.json records: generic serialization (new CaseResult fields are carried), relative
image paths, the golden copied into the report folder, atomic writing, headlines."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import textwrap
from pathlib import Path

import pytest

from quant_guard.run.cases import CaseResult, Verdict, VisualCase
from quant_guard.config.project import load_config
from quant_guard.judge.metrics import ImageMetrics
from quant_guard.judge.budgets import MemoryStats, RenderSummary
from quant_guard.report.records import as_float, headline, read_results, results_document, sort_records, to_jsonable, write_results
from quant_guard.run.case_record import build_record
from quant_guard.run.session import QuantGuardSession, RunSettings
from quant_guard.judge.checks import MetricCheck


class Color(enum.Enum):
    RED = "red"


class Version(str):
    """Like torch's TorchVersion: a str subclass that execnet refuses to serialize."""


@dataclasses.dataclass(frozen=True)
class Inner:
    value: float
    where: Path

    @property
    def doubled(self) -> float:
        return self.value * 2

    @property
    def broken(self) -> float:
        raise RuntimeError("not computable")


def test_to_jsonable_handles_dataclasses_enums_paths_and_non_finite(tmp_path: Path) -> None:
    data = {"inner": Inner(math.inf, tmp_path / "a" / "b.png"), "color": Color.RED, "items": (1, 2.5, None),
            "nan": math.nan, "neg": -math.inf, "version": Version("2.14.1"), "outside": Path("/elsewhere/x.png")}
    out = to_jsonable(data, base=tmp_path)
    assert out == {"inner": {"value": "inf", "where": "a/b.png", "doubled": "inf"}, "color": "red",
                   "items": [1, 2.5, None], "nan": "nan", "neg": "-inf", "version": "2.14.1",
                   "outside": "/elsewhere/x.png"}
    assert type(out["version"]) is str
    json.dumps(out, allow_nan=False)  # strict JSON: no Infinity/NaN literals
    assert as_float("inf") == math.inf and math.isnan(as_float("nan") or 0.0) and as_float(True) is None


def _filled(cls: type, **known: object) -> object:
    """An instance with the given fields; required fields this test does not know get 0."""
    missing = {f.name: 0 for f in dataclasses.fields(cls) if f.name not in known
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    return cls(**known, **missing)


def _session(tmp_path: Path) -> QuantGuardSession:
    (tmp_path / "qg.toml").write_text(textwrap.dedent("""
        golden_dir = "golden"
        report_dir = "qg-report"
        [[checkpoints]]
        id = "tiny"
        embedded = "tiny"
        limits = { step_time = "2 s" }
        render = { steps = 4, size = "64x64" }
        [[cases]]
        id = "circle"
        prompt = "a <b>red</b> circle"
        seeds = [3]
        """), encoding="utf-8")
    config = load_config(tmp_path / "qg.toml")
    return QuantGuardSession(config, RunSettings())


def _result(session: QuantGuardSession) -> CaseResult:
    config = session.config
    vc = VisualCase(config.checkpoints[0], config.cases[0], 3)
    folder = session.report_dir / "tiny" / "circle-s3"
    folder.mkdir(parents=True)
    for name in ("candidate.png", "diff.png"):
        (folder / name).write_bytes(b"png")
    golden = session.store.png_path(vc.key)
    golden.parent.mkdir(parents=True)
    golden.write_bytes(b"golden png")
    golden.with_suffix(".json").write_text(json.dumps({"environment": {"torch": "2.0", "device": "cpu"}}))
    checks = (MetricCheck("LPIPS", 0.2, 0.05, False, "threshold"),
              MetricCheck("PSNR", math.inf, 30.0, True, "threshold"))
    render = _filled(RenderSummary, step_times_s=(0.5, 0.25), total_s=0.8, memory=MemoryStats("cpu-rss", 1024))
    return CaseResult(vc, Verdict.IMAGE_FAILED, "differs\nmore",
                      metrics=ImageMetrics(0.2, 0.9, math.inf),
                      checks=checks, candidate_render=render,
                      images={"golden": golden, "candidate": folder / "candidate.png", "diff": folder / "diff.png"})


def test_record_has_identity_results_environment_and_relative_images(tmp_path: Path) -> None:
    session = _session(tmp_path)
    record = build_record(_result(session), session, nodeid="t.py::test[x]", outcome="failed", duration_s=1.23456,
                          worker="gw1", environment={"device": "cpu", "torch": Version("2.14.1")})
    assert record["id"] == "tiny-circle-s3" and record["checkpoint"] == "tiny" and record["seed"] == 3
    assert record["prompt"] == "a <b>red</b> circle" and record["scheme"] == "float8_e4m3fn"
    assert record["render"] == {"steps": 4, "width": 64, "height": 64, "guidance": 3.5}
    assert record["limits"]["step_time_s"] == 2.0  # the checkpoint's limits, serialized generically
    assert record["verdict"] == "image-failed" and record["passed"] is False and record["worker"] == "gw1"
    assert record["metrics"] == {"lpips": 0.2, "ssim": 0.9, "psnr": "inf"}
    assert record["checks"][0] == {"metric": "LPIPS", "value": 0.2, "limit": 0.05, "higher_is_better": False,
                                   "source": "threshold", "passed": False, "key": "", "unit": "",
                                   "dimension": "structure"}
    assert record["candidate_render"]["step_times_s"] == [0.5, 0.25]
    assert record["candidate_render"]["memory"]["peak_bytes"] == 1024
    # every image inside the report folder, the golden copied beside the candidate
    assert record["images"] == {"golden": "tiny/circle-s3/golden.png", "candidate": "tiny/circle-s3/candidate.png",
                                "diff": "tiny/circle-s3/diff.png"}
    assert (session.report_dir / "tiny/circle-s3/golden.png").read_bytes() == b"golden png"
    assert record["golden"]["environment"]["torch"] == "2.0"
    assert record["environment"] == {"device": "cpu", "torch": "2.14.1"}
    json.dumps(record, allow_nan=False)


def test_fields_added_to_case_result_later_are_carried(tmp_path: Path) -> None:
    @dataclasses.dataclass(frozen=True)
    class Later(CaseResult):
        future_checks: tuple[Inner, ...] = ()

    session = _session(tmp_path)
    base = _result(session)
    later = Later(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)},
                  future_checks=(Inner(3.0, tmp_path / "x"),))
    record = build_record(later, session, nodeid="n", outcome="failed", duration_s=0, worker=None, environment={})
    assert record["future_checks"] == [{"value": 3.0, "where": (tmp_path / "x").resolve().as_posix(), "doubled": 6.0}]


def test_headline_names_failed_checks_or_the_first_reason_line() -> None:
    def check(metric: str, value: float, limit: float, higher: bool, source: str, passed: bool) -> dict[str, object]:
        return {"metric": metric, "value": value, "limit": limit, "higher_is_better": higher, "source": source,
                "passed": passed}

    record = {"outcome": "failed", "passed": False, "reason": "first\nsecond", "checks": [
        check("SSIM", 0.9, 0.95, True, "threshold", False), check("PSNR", 25.0, 30.0, True, "expected", False),
        check("LPIPS", 0.01, 0.05, False, "threshold", True)],
        "budget_checks": [{"name": "peak VRAM", "value": 2**31, "limit": 2**30, "unit": "bytes", "passed": False}]}
    assert headline(record) == ("SSIM 0.9000 < min 0.9500; PSNR 25.00 dB < min 30.00 dB (expected); "
                                "peak VRAM 2.00 GiB > max 1.00 GiB")
    assert headline({"outcome": "failed", "passed": False, "reason": "no golden\nrun this"}) == "no golden"


def test_results_file_is_sorted_counted_and_written_atomically(tmp_path: Path) -> None:
    records = [{"id": "b", "outcome": "passed", "passed": True, "verdict": "passed"},
               {"id": "zzz", "outcome": "failed", "passed": False, "verdict": "error"},
               {"id": "a", "outcome": "failed", "passed": False, "verdict": "image-failed"}]
    ordered = sort_records(records, ["a", "b"])
    assert [r["id"] for r in ordered] == ["a", "b", "zzz"]
    document = results_document(ordered, config_source=tmp_path / "pyproject.toml", report_dir=tmp_path / "r")
    assert document["summary"] == {"total": 3, "passed": 1, "failed": 2,
                                   "verdicts": {"error": 1, "image-failed": 1, "passed": 1}}
    path = write_results(tmp_path / "r", document)
    assert read_results(tmp_path / "r") == document
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temporary file left behind
    path.write_text('{"something": "else"}')
    with pytest.raises(ValueError, match="not a quant_guard results file"):
        read_results(tmp_path / "r")
