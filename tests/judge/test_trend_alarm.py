"""The history alarm's rules on simulated series (tests/trend_support.py), replayed run by run as
the nightly judges them: a steady slope alarms within ten runs, a flat noisy series never, one
spike on its own run only, a step until the re-baseline; each metric on its own scale (PSNR in
dB). The statistics themselves are checked against scipy."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from trend_support import alarmed, geometric, linear, record, replay

from quant_guard.store import history as h
from quant_guard.judge import history_alarm
from quant_guard.config import limits
from quant_guard.judge.trend_stats import Scale, mann_kendall, theil_sen

ALARM = limits.HistoryAlarm(mode=limits.AlarmMode.FAIL)  # the defaults, as the README configures them
PSNR = dataclasses.replace(ALARM, metric="psnr", ratio=None, amount=limits.PSNR_AMOUNT_DB)  # as the config gives psnr


# ---- the statistics ------------------------------------------------------------------------------

@pytest.mark.parametrize("values", [
    [0.3, 0.1, 0.4, 0.1, 0.5, 0.9, 0.2, 0.6, 0.5, 0.3, 0.5],  # ties
    geometric(1.0, 0.05, 12, noise=0.03, seed=3),
    [2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 3.0],
])
def test_mann_kendall_and_theil_sen_agree_with_scipy(values: list[float]) -> None:
    from scipy import stats

    n = len(values)
    test = mann_kendall(values)
    reference = stats.kendalltau(range(n), values, method="asymptotic", alternative="greater")
    pairs = n * (n - 1) / 2
    tied_pairs = sum(values.count(v) * (values.count(v) - 1) / 2 for v in set(values))
    assert test.s == round(reference.statistic * math.sqrt(pairs * (pairs - tied_pairs)))  # S from tau-b
    # scipy's p has no continuity correction: the same variance gives its z from S, ours from S - 1
    z = stats.norm.isf(reference.pvalue)
    assert test.variance == pytest.approx((test.s / z) ** 2, rel=1e-9)
    assert test.p_increase == pytest.approx(stats.norm.sf((test.s - 1) / math.sqrt(test.variance)), rel=1e-9)
    slope, intercept = theil_sen(values)
    ref_slope, ref_intercept, _, _ = stats.theilslopes(values, method="joint")  # intercept: median of y - slope x
    assert (slope, intercept) == pytest.approx((ref_slope, ref_intercept), rel=1e-12)


def test_mann_kendall_of_a_constant_series_finds_nothing() -> None:
    assert mann_kendall([0.5] * 8).p_increase == 1.0  # bit-identical renders: every value tied
    assert mann_kendall([1, 2, 3, 4, 5, 6]).p_increase < 0.005 < mann_kendall([6, 5, 4, 3, 2, 1]).p_increase


def test_every_metric_has_its_scale() -> None:
    assert set(history_alarm.SCALES) == set(limits.METRICS)
    for scale, value in ((Scale.LOG, 0.02), (Scale.LOG_DISSIMILARITY, 0.97), (Scale.DB, 41.5)):
        assert scale.from_scale(scale.to_scale(value)) == pytest.approx(value)


def test_each_metric_is_bounded_on_its_own_scale() -> None:
    """x1.5 multiplies LPIPS and 1 - SSIM and is 1.76 dB of PSNR (10 log10 1.5); an amount is in
    the metric's unit. Dividing the dB by 1.5 would let 48 dB fall to 32 dB."""
    assert history_alarm._limit(0.02, ALARM) == pytest.approx(0.03)
    assert history_alarm._limit(0.98, dataclasses.replace(ALARM, metric="ssim")) == pytest.approx(0.97)
    assert history_alarm._limit(48.0, dataclasses.replace(ALARM, metric="psnr")) == pytest.approx(48.0 - 10 * math.log10(1.5))
    assert history_alarm._limit(48.0, PSNR) == pytest.approx(46.24)
    assert history_alarm._limit(2e9, dataclasses.replace(ALARM, metric="peak_memory_bytes")) == pytest.approx(3e9)
    assert history_alarm._limit(float("inf"), PSNR) == pytest.approx(100 - 1.76)  # identical images count as 100 dB


# ---- simulated series ------------------------------------------------------------------------------

@pytest.mark.parametrize("growth", [0.05, 0.10, 0.12])
def test_a_steady_slope_alarms_within_ten_runs(growth: float) -> None:
    """The issue's series (+5, +10, +12% a run for 40 runs) with +-3% noise: from the first run,
    and after 20 flat runs, the alarm fires within ten runs of the slope's start and stays on."""
    from_start = replay(geometric(0.01, growth, 40, noise=0.03, seed=7), ALARM)
    first = alarmed(from_start)
    assert first and first[0] < 10 and first == list(range(first[0], 40))
    flat = geometric(0.01, 0.0, 20, noise=0.03, seed=8)
    sloped = [v * (1 + growth) ** (i + 1) for i, v in enumerate(geometric(0.01, 0.0, 20, noise=0.03, seed=9))]
    late = alarmed(replay(flat + sloped, ALARM))
    assert late and 20 <= late[0] < 30 and late[-1] == 39


def test_psnr_falling_from_48_to_32_5_db_alarms_judged_in_db() -> None:
    values = linear(48.0, 32.5, 40, noise=0.3, seed=11)
    first = alarmed(replay(values, PSNR))
    assert first and first[0] < 10
    records = [record(i, v, "psnr") for i, v in enumerate(values)]
    judged = history_alarm.check_alarm(records[first[0]], records[:first[0]], PSNR)
    assert judged.trend is not None and "dB per run (Theil-Sen)" in judged.message and "(-1.76 dB)" in judged.message
    assert -0.5 < judged.trend.slope * -10 / math.log(10) < -0.3  # the fall of 0.397 dB a run, in dB


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_flat_noisy_series_never_alarms_in_200_runs(seed: int) -> None:
    assert alarmed(replay(geometric(0.01, 0.0, 200, noise=0.03, seed=seed), ALARM)) == []  # +-3% LPIPS
    assert alarmed(replay(linear(45.0, 45.0, 200, noise=0.5, seed=seed), PSNR)) == []  # +-0.5 dB PSNR


def test_one_spike_alarms_once_on_its_own_run() -> None:
    values = geometric(0.01, 0.0, 60, noise=0.03, seed=5)
    values[30] *= 3
    statuses = replay(values, ALARM)
    assert alarmed(statuses) == [30]
    assert statuses[31:] == [history_alarm.AlarmStatus.OK] * 29  # the spike stays in the window, tilts nothing


def test_a_step_alarms_until_the_re_baseline() -> None:
    """x2 from run 20: the jump rule sees it for a few runs, the step test against the baseline on
    every run after; a re-baseline at run 30 starts a new series, judged from its own runs."""
    values = [v * 2 if i >= 20 else v for i, v in enumerate(geometric(0.01, 0.0, 40, noise=0.03, seed=6))]
    records = [dataclasses.replace(record(i, v), baseline_id="golden-a" if i < 30 else "golden-b")
               for i, v in enumerate(values)]
    results = [history_alarm.check_alarm(r, records[:i], ALARM) for i, r in enumerate(records)]
    assert alarmed([r.status for r in results]) == list(range(20, 30))
    assert results[29].step is not None and results[29].step.before == ("r0000", "r0001", "r0002")
    assert [r.status for r in results[30:33]] == [history_alarm.AlarmStatus.TOO_FEW_RUNS] * 3  # the new series waits min_runs
    assert "30 earlier run(s) in this environment before the last re-baseline are not compared" in results[30].message
    assert results[33].compared == ("r0030", "r0031", "r0032") and results[33].rebaselined == 30


def test_an_explicit_baseline_is_what_the_step_test_compares_with() -> None:
    """judge_series takes any one series and, optionally, its baseline (e.g. another comparison's)."""
    series = [(f"n{i}", 0.020) for i in range(5)]
    assert history_alarm.judge_series(series, ALARM).status is history_alarm.AlarmStatus.OK
    judged = history_alarm.judge_series(series, ALARM, baseline=history_alarm.Baseline(0.010, ("update",), "the expected value"))
    assert judged.status is history_alarm.AlarmStatus.FAIL and judged.step is not None
    assert "(baseline 0.01: median of runs update, the expected value; x1.5)" in judged.message


def test_the_baseline_id_changes_with_the_golden_and_with_its_expected_metrics(tmp_path: Path) -> None:
    """How the history knows a re-baseline: a new golden image, or new expected metrics for an
    unchanged golden (an --update-golden that accepted a changed candidate), gives a new id."""
    import numpy as np

    from quant_guard.store.golden import GoldenKey, GoldenStore
    from quant_guard.judge.metrics import ImageMetrics

    store, key = GoldenStore(tmp_path), GoldenKey("tiny", "case", 0)
    assert store.baseline_id(key) is None  # no golden yet
    image = np.zeros((8, 8, 3), np.uint8)
    store.write(key, image, {}, ImageMetrics(0.01, 0.99, 45.0))
    first = store.baseline_id(key)
    store.write(key, image, {}, ImageMetrics(0.01, 0.99, 45.0))  # the same re-baseline again: the same id
    assert store.baseline_id(key) == first and first is not None
    store.write(key, image, {}, ImageMetrics(0.02, 0.98, 41.0))  # the golden unchanged, the expected metrics not
    second = store.baseline_id(key)
    store.write(key, image + 1, {}, ImageMetrics(0.02, 0.98, 41.0))  # a new golden image
    assert len({first, second, store.baseline_id(key)}) == 3
    assert store.baseline_id(key, "nf4") not in (None, store.baseline_id(key))  # each scheme's own expected file
