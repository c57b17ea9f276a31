"""The views of ``quant-guard history``: the runs, two runs compared, one test's course, CSV.
Plain text from a read ``History``."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from quant_guard.config.limits import METRICS, UNIT_FORMATS
from quant_guard.store.history import History

def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


# the metrics shown with a unit (memory as 985.93 MiB, not 1.03382e+09); the CSV export keeps raw values


def _fmt(value: float | None, metric: str = "") -> str:
    if value is None:
        return "-"
    if metric in UNIT_FORMATS:
        return UNIT_FORMATS[metric](value)
    return f"{value:.6g}"


def _fmt_change(before: float | None, after: float | None, metric: str) -> str:
    if before is None or after is None:
        return "-"
    delta = after - before
    if metric in UNIT_FORMATS:  # a unit after the number: the sign goes in front
        return ("+" if delta >= 0 else "-") + _fmt(abs(delta), metric)
    return f"{delta:+.6g}"


def list_runs(history: History) -> str:
    rows = []
    for run_id in history.runs():
        records = history.of_run(run_id)
        failed = sum(1 for r in records if r.verdict not in ("passed", "updated"))
        rows.append([run_id, min(r.date for r in records), records[0].host, (records[0].commit or "-")[:12],
                     ", ".join(sorted({r.env_hash for r in records})), str(len(records)), str(failed)])
    return table(["run", "date", "host", "commit", "environment", "tests", "failed"], rows)


def compare_runs(history: History, run_a: str, run_b: str) -> str:
    known = set(history.runs())
    for run_id in (run_a, run_b):
        if run_id not in known:
            raise ValueError(f"no run {run_id!r} in the history (known: {', '.join(history.runs()) or 'none'})")
    a = {r.test_id: r for r in history.of_run(run_a)}
    b = {r.test_id: r for r in history.of_run(run_b)}
    rows = []
    for test_id in sorted(set(a) | set(b)):
        ra, rb = a.get(test_id), b.get(test_id)
        for metric in METRICS:
            va, vb = ra.value(metric) if ra else None, rb.value(metric) if rb else None
            rows.append([test_id, metric, _fmt(va, metric), _fmt(vb, metric), _fmt_change(va, vb, metric)])
    out = table(["test", "metric", run_a, run_b, "change"], rows)
    envs_a = {r.env_hash for r in a.values()}
    envs_b = {r.env_hash for r in b.values()}
    if envs_a != envs_b:
        out += (f"\nnote: the runs ran in different environments ({', '.join(sorted(envs_a))} vs "
                f"{', '.join(sorted(envs_b))}): changes may come from the environment")
    return out


def course(history: History, test_id: str) -> str:
    records = history.course(test_id)
    if not records:
        known = sorted({r.test_id for r in history.records})
        raise ValueError(f"no test {test_id!r} in the history (known: {', '.join(known) or 'none'})")
    rows = [[r.run_id, r.date, r.env_hash, r.verdict, *(_fmt(r.value(m), m) for m in METRICS)] for r in records]
    return table(["run", "date", "environment", "verdict", *METRICS], rows)


CSV_COLUMNS = ("run_id", "date", "host", "commit", "test_id", "checkpoint", "scheme", "case", "seed",
               "verdict", "env_hash", *METRICS)


def to_csv(history: History) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    order = {run_id: i for i, run_id in enumerate(history.runs())}
    for r in sorted(history.records, key=lambda r: (order[r.run_id], r.test_id)):
        base = [getattr(r, c) for c in CSV_COLUMNS if c not in METRICS]
        values = [r.value(m) for m in METRICS]
        writer.writerow(["" if v is None else v for v in [*base, *values]])
    return out.getvalue()
