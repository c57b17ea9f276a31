"""Simulated metric series for the history alarm (quant_guard.store.history), and a replay that judges
each run of a series against the runs before it, as the nightly would night after night. Seeded
with ``random.Random``, so every series is the same on every machine. Used by
tests/judge/test_trend_alarm.py and benchmarks/trend_alarm.py (which also replays them on older
checkouts: only ``HistoryRecord``, ``HistoryAlarm`` and ``check_alarm`` are used)."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence

from quant_guard.store import history as h
from quant_guard.judge import history_alarm
from quant_guard.config import limits

ENV = {"device": "cpu", "torch": "2.5.1", "cpu_features": ["avx2"]}
START = dt.datetime(2026, 1, 1, 2, tzinfo=dt.timezone.utc)


def geometric(start: float, growth: float, runs: int, *, noise: float = 0.0, seed: int = 0) -> list[float]:
    """``start`` growing by the factor ``1 + growth`` per run (0.05: +5%/run), each value times
    ``1 + u``, u uniform in [-noise, noise]."""
    rng = random.Random(seed)
    return [start * (1 + growth) ** i * (1 + rng.uniform(-noise, noise)) for i in range(runs)]


def linear(start: float, end: float, runs: int, *, noise: float = 0.0, seed: int = 0) -> list[float]:
    """From ``start`` to ``end`` in equal steps (dB for PSNR), plus uniform noise of +-``noise``."""
    rng = random.Random(seed)
    return [start + (end - start) * i / (runs - 1) + rng.uniform(-noise, noise) for i in range(runs)]


def record(index: int, value: float, metric: str = "lpips") -> h.HistoryRecord:
    """Run ``index`` of one test; only ``metric`` is measured."""
    date = (START + dt.timedelta(days=index)).isoformat(timespec="seconds")
    return h.HistoryRecord(run_id=f"r{index:04d}", date=date, host="ci-1", commit=None, test_id="tiny-case-s0",
                           checkpoint="tiny", scheme="float8_e4m3fn", case="case", seed=0, verdict="passed",
                           metrics={metric: value}, env_hash=h.environment_hash(ENV), environment=ENV)


def replay(values: Sequence[float], alarm: limits.HistoryAlarm) -> list[history_alarm.AlarmStatus]:
    """The alarm's status of each run of ``values`` (oldest first), each judged against all the
    runs before it."""
    records = [record(i, v, alarm.metric) for i, v in enumerate(values)]
    return [history_alarm.check_alarm(current, records[:i], alarm).status for i, current in enumerate(records)]


def alarmed(statuses: Sequence[history_alarm.AlarmStatus]) -> list[int]:
    """The indexes of the runs that alarmed (warned or failed)."""
    return [i for i, s in enumerate(statuses) if s in (history_alarm.AlarmStatus.WARN, history_alarm.AlarmStatus.FAIL)]
