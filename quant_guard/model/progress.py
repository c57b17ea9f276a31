"""Live progress of long renders: "step k/n, seconds per step, ETA" on the terminal while a
visual test renders (a 20-step 1024x1024 float8 render takes minutes on a 12 GB GPU and pytest
shows nothing meanwhile).

A line is written at most every ``interval_s`` seconds of a render, so a render shorter than
that (every tiny-checkpoint render) prints nothing. The plugin decides where lines go
(``plugin._progress_printer``): the terminal when it is a TTY or with ``-v``; nowhere under
``-q`` or on an xdist worker. Lines are written past pytest's output capture, so they never
reach the captured output of a test, the JUnit XML or a pytest-html report.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from quant_guard.config.units import format_seconds

# (steps done, steps in all or None when unknown, seconds since the render's first step began)
StepCallback = Callable[[int, "int | None", float], None]


class ProgressPrinter:
    def __init__(self, write: Callable[[str], None], *, interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._write, self._interval, self._clock = write, interval_s, clock

    def note(self, line: str) -> None:
        """A progress line of a longer task (the sensitivity sweep: one per measured variant)."""
        self._write(line)

    def for_render(self, label: str) -> StepCallback:
        """The callback for one render; ``label`` says what renders (test id and precision)."""
        started = self._clock()
        last_line = started
        wrote = False

        def on_step(done: int, total: int | None, elapsed_s: float) -> None:
            nonlocal last_line, wrote
            now = self._clock()
            finished = total is not None and done >= total
            if finished and wrote:
                self._write(f"{label}: {done}/{total} steps in {format_duration(elapsed_s)} "
                            f"({format_seconds(elapsed_s / done)} per step)")
                return
            if finished or now - last_line < self._interval:
                return
            per_step = elapsed_s / done
            eta = f", ETA {format_duration(per_step * (total - done))}" if total is not None else ""
            self._write(f"{label}: step {done}/{total if total is not None else '?'}, "
                        f"{format_seconds(per_step)} per step{eta}")
            last_line, wrote = now, True

        return on_step


def format_duration(seconds: float) -> str:
    """Seconds as a person reads a wait: "2 min 05 s" from a minute on."""
    if seconds < 60:
        return format_seconds(seconds)
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"
