"""The metrics history: the JSON Lines store (concurrent writers, truncated lines, unknown
fields), the drift alarm against the same environment's recent runs, the ``quant-guard
history`` views, and ``--qg-history`` / ``history_dir`` on real runs of the tiny suite."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import degraded_dit

from quant_guard.store import history as h
from quant_guard.judge import history_alarm
from quant_guard.config import limits
from quant_guard.cli import main as cli_main
from quant_guard.config.project import ConfigError, parse_config

ROOT = Path(__file__).resolve().parents[2]
ENV_A = {"device": "cpu", "torch": "2.5.1", "cpu_features": ["avx2"]}
ENV_B = {"device": "cpu", "torch": "2.6.0", "cpu_features": ["avx2"]}


def record(run: int, lpips: float | None, *, env: dict | None = None, test_id: str = "tiny-red-circle-s0",
           **metrics: float) -> h.HistoryRecord:
    env = ENV_A if env is None else env
    return h.HistoryRecord(
        run_id=f"run{run:02d}", date=f"2026-11-{run:02d}T02:00:00+00:00", host="ci-1", commit=None,
        test_id=test_id, checkpoint="tiny", scheme="float8_e4m3fn", case="red-circle", seed=0, verdict="passed",
        metrics={"lpips": lpips, "ssim": 0.9, "psnr": 30.0, **metrics}, env_hash=h.environment_hash(env),
        environment=env)


def run_info(run: int = 1) -> h.RunInfo:
    return h.RunInfo(run_id=f"run{run:02d}", date=f"2026-11-{run:02d}T02:00:00+00:00", host="ci-1", commit=None)


# ---- the store -----------------------------------------------------------------------------------

def test_append_then_read_round_trips_and_never_rewrites(tmp_path: Path) -> None:
    first = h.append(tmp_path, [record(1, 0.02)], run_info(1))
    before = first.read_bytes()
    second = h.append(tmp_path, [record(1, 0.03, test_id="tiny-other-s0")], run_info(1))
    assert second == first and first.read_bytes().startswith(before)  # appended, not rewritten
    assert first.name == f"ci-1-run01-{os.getpid()}.jsonl"
    store = h.read(tmp_path)
    assert store.records == (record(1, 0.02), record(1, 0.03, test_id="tiny-other-s0"))
    assert store.skipped == ()


def test_two_processes_appending_at_once_lose_nothing(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        from quant_guard.store import history as h
        run = h.RunInfo(run_id="shared", date="2026-11-01T02:00:00+00:00", host="ci-1", commit=None)
        rec = h.HistoryRecord(run_id="shared", date=run.date, host="ci-1", commit=None, test_id="t-" + sys.argv[1],
                              checkpoint="tiny", scheme=None, case="c", seed=0, verdict="passed",
                              metrics={{"lpips": 0.01}}, env_hash="e", environment={{}})
        for i in range(300):
            h.append(Path(sys.argv[2]), [rec], run)
        """)
    procs = [subprocess.Popen([sys.executable, "-c", script, name, str(tmp_path)]) for name in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    store = h.read(tmp_path)
    assert len(list(tmp_path.glob("*.jsonl"))) == 2  # one file per writing process
    assert store.skipped == ()
    assert sorted(r.test_id for r in store.records) == ["t-a"] * 300 + ["t-b"] * 300


def test_truncated_last_line_is_skipped_and_counted(tmp_path: Path) -> None:
    path = h.append(tmp_path, [record(1, 0.02), record(2, 0.03)], run_info(1))
    text = path.read_text()
    path.write_text(text[: len(text) - 20])  # a run killed in the middle of its last write
    store = h.read(tmp_path)
    assert store.records == (record(1, 0.02),)
    assert store.skipped == (f"{path.name}:2: truncated last line",)


def test_malformed_line_in_the_middle_is_skipped_with_its_place(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(record(1, 0.02).to_json() + "\n{\"run_id\": 1}\n" + record(2, 0.03).to_json() + "\n")
    store = h.read(tmp_path)
    assert [r.run_id for r in store.records] == ["run01", "run02"]
    assert len(store.skipped) == 1 and store.skipped[0].startswith("x.jsonl:2: missing field")


def test_unknown_fields_are_ignored(tmp_path: Path) -> None:
    data = json.loads(record(1, 0.02).to_json())
    data.update(qg_history=99, from_the_future={"x": 1})
    data["metrics"]["clip_score"] = 0.3
    (tmp_path / "new.jsonl").write_text(json.dumps(data) + "\n")
    (got,) = h.read(tmp_path).records
    assert got.run_id == "run01" and got.value("lpips") == 0.02 and got.value("clip_score") == 0.3


def test_missing_directory_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        h.read(tmp_path / "nowhere")


def test_from_result_takes_metrics_memory_step_time_and_the_fingerprint() -> None:
    result = {"id": "tiny-red-circle-s0", "checkpoint": "tiny", "case": "red-circle", "seed": 0,
              "scheme": "float8_e4m3fn", "verdict": "passed",
              "metrics": {"lpips": 0.02, "ssim": 0.95, "psnr": "inf"},
              "candidate_render": {"step_times_s": [0.5, 0.1, 0.3],
                                   "memory": {"kind": "cpu-rss", "peak_bytes": 1000, "at_start_bytes": 800}},
              "environment": {**ENV_A, "python": "3.11.9", "checkpoint_hashes": {"dit": "abc"}}}
    got = h.from_result(result, run_info(3))
    assert got.metrics == {"lpips": 0.02, "ssim": 0.95, "psnr": float("inf"), "text_cer": None, "flicker": None,
                           "exposure_flicker": None, "peak_memory_bytes": 1000.0, "resident_memory_bytes": 800.0, "median_step_s": 0.3}
    assert got.environment == ENV_A and got.env_hash == h.environment_hash(ENV_A)
    assert got.run_id == "run03" and got.test_id == "tiny-red-circle-s0"


def test_from_result_keeps_the_text_cer_and_its_limit_of_a_case_that_expects_text() -> None:
    result = {"id": "tiny-sign-s0", "checkpoint": "tiny", "case": "sign", "seed": 0, "verdict": "image-failed",
              "metrics": {"lpips": 0.02, "ssim": 0.95, "psnr": 30.0},
              "scorecard": {"text": {"expected": ["NEON CITY"], "cer": 0.4444, "golden_cer": 0.0}},
              "checks": [{"metric": "text CER", "key": "text_cer_max", "value": 0.4444, "limit": 0.3,
                          "source": "threshold", "passed": False}]}
    got = h.from_result(result, run_info(1))
    assert got.value("text_cer") == 0.4444 and got.limits["text_cer"] == 0.3
    assert h.from_result({**result, "scorecard": {}}, run_info(1)).value("text_cer") is None


def test_from_result_keeps_a_video_cases_flicker_and_its_limits() -> None:
    result = {"id": "tiny-wan-clip-s0", "checkpoint": "tiny-wan", "case": "clip", "seed": 0, "verdict": "image-failed",
              "metrics": {"lpips": 0.001, "ssim": 0.996, "psnr": 42.0},
              "scorecard": {"temporal": {"frames": 5, "flicker": 1.85, "exposure_flicker": 0.2, "tlp": 0.002}},
              "checks": [{"metric": "exposure flicker", "key": "exposure_flicker_max", "value": 0.2, "limit": 0.11,
                          "source": "threshold", "passed": False},
                         {"metric": "flicker", "key": "flicker_max", "value": 1.85, "limit": 1.5,
                          "source": "threshold", "passed": False}]}
    got = h.from_result(result, run_info(1))
    assert (got.value("flicker"), got.value("exposure_flicker")) == (1.85, 0.2)
    assert (got.limits["flicker"], got.limits["exposure_flicker"]) == (1.5, 0.11)
    assert h.from_result({**result, "scorecard": {}}, run_info(1)).value("flicker") is None


def _drift_checked(golden: dict[str, float], now: dict[str, float]) -> dict:
    """A results.json record of a case judged against the bf16 render of its run (live mode): its
    ``metrics`` are that comparison, the one with the golden is in ``drift``."""
    return {"id": "tiny-red-circle-s0", "checkpoint": "tiny", "case": "red-circle", "seed": 0,
            "scheme": "float8_e4m3fn", "verdict": "passed", "metrics": now, "environment": ENV_A,
            "drift": {"mode": "live", "candidate_vs_golden": {"name": "candidate vs golden", "metrics": golden},
                      "reference_vs_golden": {"name": "bf16 now vs golden (drift)", "metrics": golden},
                      "candidate_vs_reference": {"name": "candidate vs bf16 now", "metrics": now}}}


def test_a_drift_checked_record_keeps_both_comparisons_and_the_golden_one_as_its_metrics(tmp_path: Path) -> None:
    golden, now = {"lpips": 0.0248, "ssim": 0.9596, "psnr": 21.23}, {"lpips": 0.000142, "ssim": 0.9988, "psnr": 48.58}
    got = h.from_result(_drift_checked(golden, now), run_info(4))
    assert {k: got.value(k) for k in golden} == golden and got.reference_metrics == now
    assert got.against_reference().value("psnr") == 48.58 and got.against_reference().value("median_step_s") is None
    h.append(tmp_path, [got], run_info(4))
    (back,) = h.read(tmp_path).records
    assert back.reference_metrics == now and back.value("psnr") == 21.23
    plain = h.from_result({**_drift_checked(golden, now), "drift": None}, run_info(4))
    assert plain.value("psnr") == 48.58 and plain.reference_metrics == {}  # no bf16 render: one comparison


def test_a_night_damaged_in_both_renders_alarms_through_the_golden_series() -> None:
    """The VAE damaged: candidate and bf16 reference both carry it, so against the bf16 render of
    the night the candidate looks as healthy as ever (48.6 dB); against the golden it is 21 dB."""
    from quant_guard.run.history_gate import judge_both

    healthy = {"lpips": 0.000145, "ssim": 0.9988, "psnr": 48.7}
    nights = [h.from_result(_drift_checked(healthy, healthy), run_info(i)) for i in (1, 2, 3)]
    damaged = h.from_result(_drift_checked({"lpips": 0.0248, "ssim": 0.9596, "psnr": 21.23},
                                           {"lpips": 0.000142, "ssim": 0.9988, "psnr": 48.58}), run_info(4))
    alarm = limits.HistoryAlarm(metric="psnr", ratio=1.05, window=3, mode=limits.AlarmMode.FAIL)
    judged = judge_both(damaged, h.History(tuple(nights)), alarm)
    assert judged.status is history_alarm.AlarmStatus.FAIL and judged.compared == ("run01", "run02", "run03")
    assert judged.message.startswith("tiny-red-circle-s0: psnr 21.23 < ")
    assert history_alarm.check_alarm(damaged.against_reference(), [n.against_reference() for n in nights],
                         alarm).status is history_alarm.AlarmStatus.OK  # the bf16-now series alone never sees it


def test_a_quantization_change_hidden_by_the_golden_alarms_through_the_bf16_series() -> None:
    from quant_guard.run.history_gate import judge_both

    golden = {"lpips": 0.03, "ssim": 0.7, "psnr": 32.5}  # a drifted golden dominates the comparison
    nights = [h.from_result(_drift_checked(golden, {"lpips": 0.00015, "ssim": 0.998, "psnr": 48.7}), run_info(i))
              for i in (1, 2, 3)]
    tonight = h.from_result(_drift_checked(golden, {"lpips": 0.0006, "ssim": 0.996, "psnr": 44.0}), run_info(4))
    alarm = limits.HistoryAlarm(metric="lpips", ratio=1.5, window=3, mode=limits.AlarmMode.WARN)
    judged = judge_both(tonight, h.History(tuple(nights)), alarm)
    assert judged.status is history_alarm.AlarmStatus.WARN
    assert judged.message.startswith("against the bf16 render of each run: tiny-red-circle-s0: lpips 0.0006 > ")
    both = h.from_result(_drift_checked({**golden, "lpips": 0.09}, {"lpips": 0.0006, "ssim": 0.996, "psnr": 44.0}),
                         run_info(4))
    lines = judge_both(both, h.History(tuple(nights)), alarm).message.splitlines()
    assert lines[0].startswith("tiny-red-circle-s0: lpips 0.09 > ") and lines[-1].startswith("against the bf16")


def test_environment_hash_ignores_fields_that_do_not_change_a_render() -> None:
    assert h.environment_hash(ENV_A) == h.environment_hash({**ENV_A, "python": "3.12", "created": "now"})
    assert h.environment_hash(ENV_A) != h.environment_hash(ENV_B)


def test_run_info_prefers_the_explicit_run_id_and_github(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_RUN_ID", "77")
    monkeypatch.setenv("GITHUB_RUN_ATTEMPT", "2")
    monkeypatch.setenv("GITHUB_SHA", "a" * 40)
    monkeypatch.delenv("QG_RUN_ID", raising=False)
    info = h.RunInfo.current()
    assert (info.run_id, info.commit) == ("gh77.2", "a" * 40)
    monkeypatch.setenv("QG_RUN_ID", "nightly-42")
    assert h.RunInfo.current().run_id == "nightly-42"


# ---- the drift alarm -------------------------------------------------------------------------------

def test_alarm_fails_on_a_jump_and_names_the_runs() -> None:
    past = [record(i, v) for i, v in enumerate([0.020, 0.021, 0.019, 0.022, 0.020, 0.021], start=1)]
    alarm = limits.HistoryAlarm(metric="lpips", ratio=1.5, window=5, min_runs=3, mode=limits.AlarmMode.FAIL)
    result = history_alarm.check_alarm(record(7, 0.035), past, alarm)
    assert result.status is history_alarm.AlarmStatus.FAIL and result.trend is None and result.step is None
    assert result.compared == ("run02", "run03", "run04", "run05", "run06")  # the last five, not run01
    assert result.median == pytest.approx(0.021)
    assert "run02, run03, run04, run05, run06" in result.message and "lpips 0.035 > 0.0315" in result.message
    assert history_alarm.check_alarm(record(7, 0.030), past, alarm).status is history_alarm.AlarmStatus.OK  # below 1.5 x median


def test_alarm_fails_on_a_slow_slope_that_no_night_to_night_comparison_sees() -> None:
    """+5% a night with +-3% noise: no night is 1.5 x the median of the nights before it, yet the
    trend test fails it within ten nights and names the runs, the slope and the test."""
    from trend_support import geometric

    values = geometric(0.02, 0.05, 10, noise=0.03, seed=1)
    past, tonight = [record(i, v) for i, v in enumerate(values[:-1], start=1)], record(10, values[-1])
    alarm = limits.HistoryAlarm(metric="lpips", ratio=1.5, window=10, min_runs=3, mode=limits.AlarmMode.FAIL)
    jump_only = history_alarm.check_alarm(tonight, past, dataclasses.replace(alarm, alpha=0.0, step_runs=0))
    assert jump_only.status is history_alarm.AlarmStatus.OK  # the median rule alone: each night is close to the last
    result = history_alarm.check_alarm(tonight, past, alarm)
    assert result.status is history_alarm.AlarmStatus.FAIL and result.trend is not None
    assert result.trend.runs == tuple(f"run{i:02d}" for i in range(1, 11))
    assert math.expm1(result.trend.slope) == pytest.approx(0.05, abs=0.02)  # Theil-Sen finds the +5% a night
    assert result.trend.p_value < 0.001 and result.trend.end > result.trend.limit
    first = result.message.splitlines()[0]
    assert first.startswith("tiny-red-circle-s0: trend in lpips: +") and "% per run (Theil-Sen) over runs run01 to " \
        "run10 (10 runs, Mann-Kendall p = " in first and "< 0.05); at that rate 10 runs take it from " in first


def test_alarm_warns_in_warn_mode_and_knows_higher_is_better() -> None:
    past = [record(i, 0.02, psnr=30.0) for i in range(1, 4)]
    alarm = limits.HistoryAlarm(metric="psnr", ratio=None, amount=2.0, window=5, min_runs=3, mode=limits.AlarmMode.WARN)
    worse = history_alarm.check_alarm(record(4, 0.02, psnr=27.5), past, alarm)
    assert worse.status is history_alarm.AlarmStatus.WARN and "psnr 27.5 < 28" in worse.message
    assert history_alarm.check_alarm(record(4, 0.02, psnr=35.0), past, alarm).status is history_alarm.AlarmStatus.OK


def test_alarm_never_compares_another_environment() -> None:
    past = [record(i, 0.01, env=ENV_B) for i in range(1, 6)] + [record(6, 0.02)]
    alarm = limits.HistoryAlarm(metric="lpips", ratio=1.5, window=5, min_runs=2, mode=limits.AlarmMode.FAIL)
    result = history_alarm.check_alarm(record(7, 0.025), past, alarm)
    # 0.025 would be 2.5 x the other environment's median: it is not compared with it
    assert result.status is history_alarm.AlarmStatus.TOO_FEW_RUNS
    assert "1 earlier run(s) in this environment" in result.message
    assert "5 run(s) in another environment are not compared" in result.message
    assert result.compared == ("run06",)
    past.append(record(5, 0.021))  # a second run in this environment: now it is judged, against these two only
    judged = history_alarm.check_alarm(record(7, 0.025), past, alarm)
    assert judged.status is history_alarm.AlarmStatus.OK and judged.compared == ("run05", "run06")


def test_alarm_ignores_the_current_run_and_later_runs() -> None:
    past = [record(i, 0.02) for i in range(1, 4)] + [record(9, 1.0)]
    alarm = limits.HistoryAlarm(mode=limits.AlarmMode.FAIL)
    result = history_alarm.check_alarm(record(4, 0.025), [*past, record(4, 0.025)], alarm)
    assert result.status is history_alarm.AlarmStatus.OK and result.compared == ("run01", "run02", "run03")


def test_step_rule_keeps_reporting_a_shift_the_median_rule_has_absorbed() -> None:
    """Three nights at 0.02, then four at 0.04: by the fourth the median of the last three is 0.04
    and the median rule is quiet; the step test still compares the last three nights with the
    baseline (the first three since the re-baseline) and names both sides."""
    values = [0.020, 0.021, 0.019, 0.040, 0.041, 0.039]
    past = [record(i, v) for i, v in enumerate(values, start=1)]
    alarm = limits.HistoryAlarm(metric="lpips", ratio=1.5, window=6, min_runs=3, step_runs=3, mode=limits.AlarmMode.FAIL)
    median_only = history_alarm.check_alarm(record(7, 0.040), past, dataclasses.replace(alarm, step_runs=0, alpha=0.0))
    assert median_only.status is history_alarm.AlarmStatus.OK  # 0.040 is within 1.5 x the median 0.0305
    result = history_alarm.check_alarm(record(7, 0.040), past, alarm)
    assert result.status is history_alarm.AlarmStatus.FAIL and result.step is not None
    assert result.step.before == ("run01", "run02", "run03")
    assert result.step.after == ("run05", "run06", "run07")
    assert result.step.median_before == pytest.approx(0.020) and result.step.median_after == pytest.approx(0.040)
    assert ("step change in lpips against its baseline: median 0.04 of runs run05, run06, run07 > 0.03 "
            "(baseline 0.02: median of runs run01, run02, run03, the first runs since the last re-baseline; x1.5)"
            ) in result.message


def test_one_noisy_run_is_no_step() -> None:
    """One bad night trips the median rule (tonight) but is never a step, tonight or later."""
    alarm = limits.HistoryAlarm(metric="lpips", ratio=1.5, window=5, min_runs=3, step_runs=3, mode=limits.AlarmMode.FAIL)
    calm = [record(i, v) for i, v in enumerate([0.020, 0.021, 0.019, 0.020, 0.021], start=1)]
    tonight = history_alarm.check_alarm(record(6, 0.060), calm, alarm)
    assert tonight.status is history_alarm.AlarmStatus.FAIL and tonight.step is None
    assert "step change" not in tonight.message
    after = history_alarm.check_alarm(record(7, 0.021), [*calm[1:], record(6, 0.060)], alarm)
    assert after.status is history_alarm.AlarmStatus.OK and after.step is None


def test_every_alarm_message_says_when_other_environments_were_left_out() -> None:
    past = [record(i, 0.02) for i in (1, 2, 3)] + [record(4, 0.5, env=ENV_B)]
    alarm = limits.HistoryAlarm(window=5, min_runs=3, mode=limits.AlarmMode.FAIL)
    ok = history_alarm.check_alarm(record(5, 0.021), past, alarm)
    assert ok.status is history_alarm.AlarmStatus.OK and ok.excluded == 1
    assert ok.message.endswith("; 1 run(s) in another environment are not compared")
    failed = history_alarm.check_alarm(record(5, 0.05), past, alarm)
    assert failed.status is history_alarm.AlarmStatus.FAIL and "1 run(s) in another environment are not compared" in failed.message
    assert failed.compared == ("run01", "run02", "run03")


# ---- trends ------------------------------------------------------------------------------------------

def _trend_history() -> h.History:
    """Five runs of two tests; the environment changes before run04; the first test slopes up."""
    records = []
    for i in range(1, 6):
        env = ENV_B if i >= 4 else ENV_A
        for test_id, lpips in (("tiny-red-circle-s0", 0.010 + 0.002 * i), ("tiny-other-s0", 0.020)):
            r = record(i, lpips, env=env, test_id=test_id, peak_memory_bytes=1e9, median_step_s=0.5)
            records.append(dataclasses.replace(r, limits={"lpips": 0.05, "psnr": 25.0}))
    return h.History(tuple(records))


def test_trends_of_each_test_mark_the_environment_change_and_the_threshold() -> None:
    from quant_guard.report.trends import build_trends

    trends = build_trends(_trend_history(), limits.TrendSettings(runs=4))
    assert trends.runs == ("run02", "run03", "run04", "run05")  # the window: the last four runs
    trend = trends.tests["tiny-red-circle-s0"]
    assert trend.runs == trends.runs
    assert trend.env_changes == ("before run run04: torch 2.5.1 → 2.6.0",)
    lpips = trend.sparks[0]
    assert (lpips.label, lpips.first, lpips.last, lpips.threshold) == ("LPIPS", "0.0140", "0.0200", "0.0500")
    assert 'class="threshold"' in lpips.svg and lpips.svg.count('class="env-change"') == 1
    assert [s.label for s in trend.sparks] == ["LPIPS", "PSNR", "peak memory", "step time"]
    assert trend.sparks[2].threshold == ""  # no memory limit recorded: no line


def test_moved_table_compares_with_the_chosen_baseline() -> None:
    from quant_guard.report.trends import build_trends

    store = _trend_history()
    (oldest,) = build_trends(store, limits.TrendSettings(runs=5)).moved
    assert (oldest.checkpoint, oldest.baseline, oldest.latest) == ("tiny", "run01", "run05")
    first = [c.text for c in oldest.rows[0].cells]
    assert first[:4] == ["tiny-red-circle-s0", "0.0120", "0.0200", "+66.7%"]  # moved most: first
    assert oldest.rows[0].cells[3].ok is False and first[5].startswith("changed: torch 2.5.1 → 2.6.0")
    assert [c.text for c in oldest.rows[1].cells][3] == "+0.0%"
    (previous,) = build_trends(store, limits.TrendSettings(baseline="previous")).moved
    assert previous.baseline == "run04" and [c.text for c in previous.rows[0].cells][5] == "same"
    (named,) = build_trends(store, limits.TrendSettings(runs=2, baseline="run02")).moved
    assert named.baseline == "run02"  # an explicit run older than the window still counts
    with pytest.raises(ValueError, match="history baseline 'run99' is neither oldest nor previous"):
        build_trends(store, limits.TrendSettings(baseline="run99"))


def test_trends_cli_writes_a_page_with_every_test(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for run_id in _trend_history().runs():
        h.append(tmp_path / "hist", _trend_history().of_run(run_id), run_info(int(run_id[3:])))
    assert cli_main(["history", str(tmp_path / "hist"), "report", str(tmp_path / "out"), "--baseline",
                     "previous"]) == 0
    assert "wrote the trends of 2 tests over 5 runs" in capsys.readouterr().out
    page = (tmp_path / "out" / "trends.html").read_text()
    assert page.count('<svg xmlns="http://www.w3.org/2000/svg" class="sparkline"') == 8  # 2 tests x 4 metrics
    assert "moved most since run04 (previous)" in page and 'id="case-tiny-other-s0"' in page
    assert cli_main(["history", str(tmp_path / "hist"), "report", str(tmp_path / "out"), "--baseline", "x"]) == 1
    assert "history baseline 'x'" in capsys.readouterr().err

    # python -m quant_guard.report DIR --history HIST: a run's index.html re-rendered with its trends
    from quant_guard.report.__main__ import main as report_main
    from quant_guard.report.records import RESULTS_NAME, RESULTS_VERSION

    report = tmp_path / "report"
    report.mkdir()
    (report / RESULTS_NAME).write_text(json.dumps({"quant_guard_results": RESULTS_VERSION, "results": [
        {"id": "tiny-red-circle-s0", "checkpoint": "tiny", "case": "red-circle", "seed": 0, "verdict": "passed",
         "passed": True, "outcome": "passed"}]}))
    assert report_main([str(report), "--history", str(tmp_path / "hist")]) == 0
    index = (report / "index.html").read_text()
    assert index.count('class="sparkline"') == 4 and '<section id="trends">' in index


# ---- configuration ---------------------------------------------------------------------------------

def _config(tmp_path: Path, extra: str) -> object:
    import tomllib

    return parse_config(tomllib.loads(extra), file=tmp_path / "pyproject.toml", where="tool.quant_guard")


def test_history_keys_parse_strictly(tmp_path: Path) -> None:
    config = _config(tmp_path, 'history_dir = "hist"\n'
                               'history_alarm = { metric = "psnr", amount = 1.5, window = 4, mode = "fail" }')
    assert config.history_dir == tmp_path / "hist"
    assert config.history_alarm == limits.HistoryAlarm(metric="psnr", ratio=None, amount=1.5, window=4, min_runs=3,
                                                  step_runs=3, alpha=0.05, mode=limits.AlarmMode.FAIL)
    assert _config(tmp_path, "").history_dir is None
    assert _config(tmp_path, "history_alarm = {}").history_alarm == limits.HistoryAlarm()
    # psnr is judged in dB: its default bound is an amount, x1.5 of the error
    assert _config(tmp_path, 'history_alarm = { metric = "psnr", alpha = 0.01 }').history_alarm == limits.HistoryAlarm(
        metric="psnr", ratio=None, amount=1.76, alpha=0.01)
    assert _config(tmp_path, "history_alarm = { window = 5, min_runs = 3, step_runs = 4 }").history_alarm.step_runs == 4
    for text, message in [("history_dir = 3", "history_dir: must be str"),
                          ('history_alarm = { metric = "fid" }', "history_alarm.metric: must be one of lpips"),
                          ('history_alarm = { mode = "loud" }', "history_alarm.mode: must be one of fail, warn"),
                          ("history_alarm = { ratio = 0.5 }", "history_alarm.ratio: must be between 1.0"),
                          ("history_alarm = { window = 2, min_runs = 3 }", "history_alarm.min_runs: must be at most"),
                          ('history_alarm = { metric = "psnr", ratio = 1.5 }',
                           "history_alarm.ratio: does not apply to psnr, which is judged in dB: give amount in dB"),
                          ("history_alarm = { alpha = 0.6 }", "history_alarm.alpha: must be between 0.0 and 0.5"),
                          ('history_report = { baseline = "" }', "history_report.baseline: must be oldest or previous"),
                          ('history_report = { metric = "fid" }', "history_report.metric: must be one of lpips"),
                          ("history_report = { runs = 1 }", "history_report.runs: must be"),
                          ("history_alarm = { windows = 2 }", "history_alarm.windows: unknown key")]:
        with pytest.raises(ConfigError, match=message):
            _config(tmp_path, text)


# ---- quant-guard history ---------------------------------------------------------------------------

@pytest.fixture
def store(tmp_path: Path) -> Path:
    for run, lpips in ((1, 0.02), (2, 0.025), (3, 0.04)):
        env = ENV_B if run == 3 else ENV_A
        h.append(tmp_path, [record(run, lpips, env=env), record(run, 0.1, env=env, test_id="tiny-other-s0")],
                 run_info(run))
    return tmp_path


def test_cli_list_runs(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["history", str(store), "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["run", "date", "host", "commit", "environment", "tests", "failed"]
    assert [line.split()[0] for line in lines[2:]] == ["run01", "run02", "run03"]
    assert lines[4].split()[-2:] == ["2", "0"] and h.environment_hash(ENV_B) in lines[4]


def test_cli_compare_two_runs(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["history", str(store), "compare", "run01", "run03"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("tiny-red-circle-s0") and " lpips " in line)
    assert row.split()[2:] == ["0.02", "0.04", "+0.02"]
    assert "different environments" in out
    assert cli_main(["history", str(store), "compare", "run01", "run09"]) == 1
    assert "no run 'run09'" in capsys.readouterr().err


def test_cli_course_of_a_test(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["history", str(store), "course", "tiny-red-circle-s0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[2:]] == ["run01", "run02", "run03"]
    assert [line.split()[4] for line in lines[2:]] == ["0.02", "0.025", "0.04"]  # the lpips column
    assert cli_main(["history", str(store), "course", "nope"]) == 1


def test_cli_course_and_compare_show_memory_and_time_in_units(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Memory reads 985.93 MiB, not 1.03382e+09; the CSV export keeps the raw number."""
    for run, peak in ((1, 1_033_820_000), (2, 1_100_000_000)):
        h.append(tmp_path, [record(run, 0.02, peak_memory_bytes=peak, resident_memory_bytes=4096,
                                   median_step_s=0.0123)], run_info(run))
    assert cli_main(["history", str(tmp_path), "course", "tiny-red-circle-s0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header[-3:] == ["peak_memory_bytes", "resident_memory_bytes", "median_step_s"]
    assert lines[2].split()[-6:] == ["985.93", "MiB", "4.00", "KiB", "12.3", "ms"]
    assert lines[3].split()[-6:-4] == ["1.02", "GiB"]
    assert "e+0" not in "\n".join(lines)
    assert cli_main(["history", str(tmp_path), "compare", "run01", "run02"]) == 0
    rows = {line.split()[1]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows["peak_memory_bytes"].split()[2:] == ["985.93", "MiB", "1.02", "GiB", "+63.11", "MiB"]
    assert rows["resident_memory_bytes"].split()[-2:] == ["+0", "B"]
    assert rows["lpips"].split()[-1] == "+0"
    assert cli_main(["history", str(tmp_path), "csv"]) == 0
    assert "1033820000" in capsys.readouterr().out


def test_cli_csv_export(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import csv

    out = tmp_path / "out" / "history.csv"
    out.parent.mkdir()
    assert cli_main(["history", str(store), "csv", "-o", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["run_id"], r["test_id"], r["lpips"]) for r in rows][:2] == [
        ("run01", "tiny-other-s0", "0.1"), ("run01", "tiny-red-circle-s0", "0.02")]
    assert len(rows) == 6 and rows[0]["commit"] == "" and rows[0]["median_step_s"] == ""


def test_cli_warns_about_skipped_lines(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with next(store.glob("*.jsonl")).open("a") as f:
        f.write('{"run_id": "cut')
    assert cli_main(["history", str(store), "list"]) == 0
    err = capsys.readouterr().err
    assert "warning: skipped" in err and "truncated last line" in err


# ---- real runs --------------------------------------------------------------------------------------

def test_qg_history_option_and_config_key_append_each_run(pytester: pytest.Pytester,
                                                        qg_project: Callable[..., Path],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_RUN_ID", raising=False)
    monkeypatch.setenv("QG_RUN_ID", "first")
    root = qg_project()
    pytester.runpytest("--update-golden").assert_outcomes(passed=1)
    assert not (root / "hist").exists()  # no history unless asked for
    result = pytester.runpytest("--qg-history", "hist")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*quant_guard history: *hist*first*.jsonl"])
    (first,) = h.read(root / "hist").records
    assert (first.run_id, first.test_id, first.verdict, first.seed) == ("first", "tiny-red-circle-s0", "passed", 0)
    assert first.value("lpips") is not None and first.value("median_step_s") is not None
    assert first.value("peak_memory_bytes") and first.environment["device"] == "cpu"
    # the config key; the option still wins over it
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('report_dir = "qg-report"',
                                                       'report_dir = "qg-report"\nhistory_dir = "from-config"'))
    monkeypatch.setenv("QG_RUN_ID", "second")
    pytester.runpytest().assert_outcomes(passed=1)
    monkeypatch.setenv("QG_RUN_ID", "third")
    pytester.runpytest("--qg-history", "hist").assert_outcomes(passed=1)
    assert [r.run_id for r in h.read(root / "from-config").records] == ["second"]
    store = h.read(root / "hist")
    assert store.runs() == ["first", "third"] and store.skipped == ()
    assert {r.env_hash for r in store.records} == {first.env_hash}  # same machine, same environment


def _fake_history(directory: Path, real: h.HistoryRecord, lpips: float, *, environment: dict | None = None,
                  baseline_id: str | None = None) -> None:
    """Three earlier nights of ``real``'s test with ``lpips``, in ``real``'s environment and against
    its golden unless given."""
    env = real.environment if environment is None else environment
    nights = [dataclasses.replace(real, run_id=f"night{i}", date=f"2026-11-0{i}T02:00:00+00:00",
                                  metrics={**real.metrics, "lpips": lpips}, environment=env,
                                  env_hash=h.environment_hash(env),
                                  baseline_id=real.baseline_id if baseline_id is None else baseline_id)
              for i in (1, 2, 3)]
    directory.mkdir(exist_ok=True)
    (directory / "ci-nightly.jsonl").write_text("".join(r.to_json() + "\n" for r in nights))


def test_history_alarm_on_real_runs_fails_warns_and_keeps_environments_apart(
        pytester: pytest.Pytester, qg_project: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_RUN_ID", raising=False)
    root = qg_project()
    pytester.runpytest("--update-golden").assert_outcomes(passed=1)
    monkeypatch.setenv("QG_RUN_ID", "probe")
    pytester.runpytest("--qg-history", "probe").assert_outcomes(passed=1)
    (real,) = h.read(root / "probe").records
    lpips = real.value("lpips")
    assert lpips is not None and lpips > 0  # float8 differs from bf16 a little: the slope has room to show
    _fake_history(root / "hist", real, lpips / 3)  # three nights ago it was three times closer

    pyproject = root / "pyproject.toml"
    plain = pyproject.read_text()

    def configure(mode: str) -> None:
        keys = f'history_dir = "hist"\nhistory_alarm = {{ metric = "lpips", ratio = 1.5, window = 3, mode = "{mode}" }}'
        pyproject.write_text(plain.replace('report_dir = "qg-report"', 'report_dir = "qg-report"\n' + keys))

    configure("fail")
    monkeypatch.setenv("QG_RUN_ID", "tonight")
    failed = pytester.runpytest()
    failed.assert_outcomes(failed=1)  # within every threshold, but three times its recent median
    failed.stdout.fnmatch_lines(["*tiny-red-circle-s0: drifted against its history: tiny-red-circle-s0: lpips * > * "
                                 "(median * of runs night1, night2, night3 in this environment *, x1.5)*"])
    record = json.loads((root / "qg-report" / "results.json").read_text())["results"][0]
    assert record["verdict"] == "history-drift" and record["history"]["compared"] == ["night1", "night2", "night3"]
    assert "tonight" in h.read(root / "hist").runs()  # its numbers still join the history

    configure("warn")
    monkeypatch.setenv("QG_RUN_ID", "tomorrow")
    warned = pytester.runpytest()
    warned.assert_outcomes(passed=1)  # (pytest's own warnings about the plugin's import may come too)
    warned.stdout.fnmatch_lines(["*HistoryDriftWarning: tiny-red-circle-s0: lpips * > * (median * of runs night2, "
                                 "night3, tonight*"])
    assert warned.stdout.str().count("HistoryDriftWarning") == 1

    # the same numbers from another environment are never compared: too few runs, said so, passed
    for path in (root / "hist").glob("*.jsonl"):
        path.unlink()
    _fake_history(root / "hist", real, lpips / 3, environment={**real.environment, "torch": "0.0-elsewhere"})
    configure("fail")
    monkeypatch.setenv("QG_RUN_ID", "other-env")
    pytester.runpytest().assert_outcomes(passed=1)
    record = json.loads((root / "qg-report" / "results.json").read_text())["results"][0]
    assert record["verdict"] == "passed" and record["history"]["status"] == "too-few-runs"
    assert "3 run(s) in another environment are not compared" in record["history"]["message"]

    # nor the numbers judged against another golden or other expected metrics: a re-baseline
    assert real.baseline_id is not None and record["baseline_id"] == real.baseline_id  # the golden's, as recorded
    for path in (root / "hist").glob("*.jsonl"):
        path.unlink()
    _fake_history(root / "hist", real, lpips / 3, baseline_id="an-older-golden")
    monkeypatch.setenv("QG_RUN_ID", "rebaselined")
    pytester.runpytest().assert_outcomes(passed=1)
    history = json.loads((root / "qg-report" / "results.json").read_text())["results"][0]["history"]
    assert history["status"] == "too-few-runs" and history["rebaselined"] == 3
    assert "3 earlier run(s) in this environment before the last re-baseline are not compared" in history["message"]


@pytest.mark.slow
def test_xdist_run_is_appended_once_by_the_controller(pytester: pytest.Pytester, qg_project: Callable[..., Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("QG_RUN_ID", "parallel")
    root = qg_project(seeds="[0, 1]")
    pytester.runpytest("--update-golden").assert_outcomes(passed=2)
    result = pytester.runpytest_subprocess("-n", "2", "--qg-history", "hist", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    files = list((root / "hist").glob("*.jsonl"))
    assert len(files) == 1  # the controller's file: the merged run, not one file per worker
    store = h.read(root / "hist")
    assert sorted(r.test_id for r in store.records) == ["tiny-red-circle-s0", "tiny-red-circle-s1"]
    assert store.runs() == ["parallel"] and store.skipped == ()


def test_a_candidate_worse_each_night_trips_the_alarm_naming_the_runs_and_the_report_draws_it(
        pytester: pytest.Pytester, qg_project: Callable[..., Path], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """The issue's "done when": four nights, each candidate a little noisier (noise of 10% to 25%
    of each weight's std on one block; every night within the tiny checkpoint's thresholds). The
    first two nights have too little history to judge; the third fails as history-drift against
    the median of the first two; the fourth also finds the step. index.html draws each night."""
    import xml.etree.ElementTree as ET

    monkeypatch.delenv("GITHUB_RUN_ID", raising=False)
    root = qg_project()
    pytester.runpytest("--update-golden").assert_outcomes(passed=1)
    pyproject = root / "pyproject.toml"
    keys = ('history_dir = "hist"\n'
            'history_alarm = { metric = "lpips", ratio = 1.5, window = 3, min_runs = 2, step_runs = 2, mode = "fail" }')
    verdicts, messages = [], []
    for night, strength in enumerate((0.10, 0.15, 0.20, 0.25), start=1):
        candidate = degraded_dit(tmp_path / f"dit-night{night}.safetensors", "noise", strength)
        qg_project(checkpoint_extra=f'candidate = {{ dit = "{candidate.as_posix()}" }}')
        pyproject.write_text(pyproject.read_text().replace('report_dir = "qg-report"',
                                                           'report_dir = "qg-report"\n' + keys))
        monkeypatch.setenv("QG_RUN_ID", f"night{night}")
        pytester.runpytest("--qg-no-expected")  # only the thresholds and the history judge
        (result,) = json.loads((root / "qg-report" / "results.json").read_text())["results"]
        assert all(c["passed"] for c in result["checks"]), result["checks"]  # within every threshold
        verdicts.append(result["verdict"])
        messages.append(result["history"]["message"])
    assert verdicts == ["passed", "passed", "history-drift", "history-drift"]
    assert "has 1 earlier run(s) in this environment" in messages[1]
    assert "(median" in messages[2] and "of runs night1, night2 in this environment" in messages[2]
    assert "step change in lpips against its baseline" in messages[3]
    assert "median of runs night1, night2, the first runs since the last re-baseline" in messages[3]
    assert "of runs night3, night4" in messages[3] and "of runs night1, night2" in messages[3]
    store = h.read(root / "hist")
    lpips = [store.course("tiny-red-circle-s0")[i].value("lpips") for i in range(4)]
    assert lpips == sorted(lpips) and store.runs() == ["night1", "night2", "night3", "night4"]  # worse each night

    page = (root / "qg-report" / "index.html").read_text()
    svgs = re.findall(r'<svg xmlns="http://www.w3.org/2000/svg" class="sparkline".*?</svg>', page, re.S)
    assert len(svgs) == 4  # LPIPS, PSNR, peak memory, step time of the one case
    svg = ET.fromstring(svgs[0])
    assert svg.findtext("{http://www.w3.org/2000/svg}title", "").startswith("LPIPS over 4 runs")
    (line,) = svg.iter("{http://www.w3.org/2000/svg}polyline")
    assert len(line.get("points", "").split()) == 4  # one point per night
    assert any(e.get("class") == "threshold" for e in svg)  # the tiny checkpoint's LPIPS threshold, 0.008
    assert '<section id="trends">' in page and "moved most since night1 (oldest)" in page
