"""Live render progress: throttled lines with step k/n, seconds per step and ETA; shown with -v
(or on a TTY), silent under -q, never in the JUnit XML; the step timer stays exact."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from quant_guard.model.progress import ProgressPrinter, format_duration


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_render_shorter_than_the_interval_prints_nothing() -> None:
    lines: list[str] = []
    clock = FakeClock()
    on_step = ProgressPrinter(lines.append, interval_s=10, clock=clock).for_render("tiny-a-s0 (float8_e4m3fn)")
    for step in range(1, 9):
        clock.now += 0.05
        on_step(step, 8, step * 0.05)
    assert lines == []


def test_a_long_render_prints_at_most_one_line_per_interval_and_a_last_line() -> None:
    lines: list[str] = []
    clock = FakeClock()
    on_step = ProgressPrinter(lines.append, interval_s=10, clock=clock).for_render("real-rain-s0 (float8_e4m3fn)")
    for step in range(1, 21):  # 9.3 s per step, like a 12 GB GPU at 1024x1024
        clock.now += 9.3
        on_step(step, 20, step * 9.3)
    assert lines[0] == "real-rain-s0 (float8_e4m3fn): step 2/20, 9.30 s per step, ETA 2 min 47 s"
    assert len(lines) == 10  # steps 2, 4, ..., 18 (a line every 18.6 s: never two within 10 s), then the last
    assert lines[-1] == "real-rain-s0 (float8_e4m3fn): 20/20 steps in 3 min 06 s (9.30 s per step)"


def test_an_unknown_step_count_has_no_eta() -> None:
    lines: list[str] = []
    on_step = ProgressPrinter(lines.append, interval_s=0).for_render("x")
    on_step(3, None, 1.5)
    assert lines == ["x: step 3/?, 500.0 ms per step"]


def test_durations_read_as_a_wait() -> None:
    assert [format_duration(s) for s in (0.25, 59.0, 60.0, 186.4)] == ["250.0 ms", "59.00 s", "1 min 00 s",
                                                                        "3 min 06 s"]


def test_the_callback_is_never_part_of_a_step_time(_heavy_modules: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow progress callback lengthens the render, not the measured step times. The callback's
    slowness is a clock jump of 60 s (render's clock is the real one plus the jumps), far beyond
    any real step on any machine, so the test does not depend on how fast this one is."""
    import types

    from quant_guard.model import render as render_module
    from quant_guard.config.project import parse_config
    from quant_guard.config.schemes import FLOAT8_E4M3FN
    from quant_guard.model.pipelines import build_pipeline
    from quant_guard.model.checkpoints import resolve_checkpoint
    from quant_guard.model.render import RenderRequest, render
    from quant_guard.config.tiny_settings import T5_SEQUENCE_LENGTH

    spec = parse_config({"checkpoints": [{"id": "tiny", "embedded": "tiny", "device": "cpu"}], "cases": []},
                        file=Path("/x/pyproject.toml")).checkpoint("tiny")
    pipe = build_pipeline(resolve_checkpoint(spec), FLOAT8_E4M3FN, "cpu")
    calls: list[tuple[int, int | None]] = []
    jumped = [0.0]
    monkeypatch.setattr(render_module, "time",
                        types.SimpleNamespace(perf_counter=lambda: time.perf_counter() + jumped[0]))

    def slow(done: int, total: int | None, elapsed: float) -> None:
        calls.append((done, total))
        jumped[0] += 60.0

    request = RenderRequest("a red circle on a blue background in the center", 0, 4, 64, 64, 3.5, T5_SEQUENCE_LENGTH)
    result = render(pipe, request, on_step=slow)
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert max(result.step_times_s) < 60.0 <= result.total_s / 4


def test_progress_is_shown_with_v_silent_with_q_and_never_in_junit(pytester: pytest.Pytester,
                                                                   qg_project: Callable[..., Path]) -> None:
    qg_project()
    assert pytester.runpytest("--update-golden").ret == 0
    shown = pytester.runpytest("-v", "--qg-progress-interval", "0", "--junitxml", "junit.xml")
    shown.assert_outcomes(passed=1)
    shown.stdout.fnmatch_lines(["tiny-red-circle-s0 (float8_e4m3fn): step 1/4, * per step, ETA *",
                                "tiny-red-circle-s0 (float8_e4m3fn): 4/4 steps in *"])
    assert "step 1/4" not in (pytester.path / "junit.xml").read_text()
    quiet = pytester.runpytest("-q", "--qg-progress-interval", "0")
    quiet.assert_outcomes(passed=1)
    assert "step 1/4" not in quiet.stdout.str()
    # not a TTY and not -v: nothing, whatever the interval
    plain = pytester.runpytest("--qg-progress-interval", "0")
    assert "step 1/4" not in plain.stdout.str()
