#!/usr/bin/env python3
"""Markdown summary of quant_guard results, for ``$GITHUB_STEP_SUMMARY``.

    python ci/step_summary.py qg-out/report [more report dirs or results.json files] >> "$GITHUB_STEP_SUMMARY"

Reads ``<report dir>/results.json`` (written by every run with visual tests; several dirs, e.g.
one per shard, are merged) and prints one table row per visual test: verdict, LPIPS / SSIM /
PSNR, peak memory and the step-time statistic against their limits, and the test's duration;
then, per checkpoint that ran two or more schemes, the scheme comparison (ranked by
``quant_guard/report/scheme_table.py`` from this checkout); then the reason of each failure. With
``--history DIR`` (a metrics history that holds this run) a "Moved since last night" table per
checkpoint follows: this run's tests whose LPIPS moved most since the run before. Standard library
only (plus quant_guard's history, scheme table and trends from this checkout, which need nothing else): it
runs where the project is not installed (the workflow's summary job). Exit status 0, or 1 with
``--require-results`` when no result was found at all (e.g. a checkpoint id that selected nothing
on every shard).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parents[1]  # quant_guard is imported from here, not installed
RESULTS_NAME = "results.json"
PASSED_VERDICTS = ("passed", "updated")
METRICS = (("LPIPS", "lpips"), ("SSIM", "ssim"), ("PSNR", "psnr"))


# ---- reading -----------------------------------------------------------------------------------

def results_file(path: Path) -> Path:
    return path / RESULTS_NAME if path.is_dir() else path


def load_records(paths: list[Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """Records of every results.json found, sorted by test id; and a note per path without one."""
    records: list[dict[str, Any]] = []
    notes: list[str] = []
    for path in paths:
        file = results_file(path)
        try:
            document = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            notes.append(f"no {RESULTS_NAME} in `{path}`: no visual test ran there")
            continue
        except (OSError, ValueError) as exc:
            notes.append(f"`{file}` could not be read: {exc}")
            continue
        found = document.get("results") if isinstance(document, dict) else None
        if not isinstance(found, list):
            notes.append(f"`{file}` is not a quant_guard results file")
            continue
        records.extend(r for r in found if isinstance(r, dict))
    if len(paths) > 1:  # one file keeps the configuration's order; merged shards sort by id
        records.sort(key=lambda r: str(r.get("id", "")))
    return records, notes


# ---- formatting --------------------------------------------------------------------------------

def number(value: Any) -> float | None:
    """A float from results.json (which writes non-finite floats as "inf", "-inf", "nan")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if value in ("inf", "-inf", "nan"):
        return float(value)
    return None


def fmt_bytes(value: float | None) -> str:
    if value is None:
        return "–"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value:.0f} B"


def fmt_seconds(value: float | None) -> str:
    if value is None:
        return "–"
    if not math.isfinite(value) or value >= 1:
        return f"{value:.2f} s"
    return f"{value * 1000:.1f} ms"


def fmt_metric(name: str, value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f} dB" if name == "PSNR" else f"{value:.4f}"


def cell(text: str) -> str:
    """Safe inside a Markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def is_failure(record: Mapping[str, Any]) -> bool:
    return record.get("outcome") == "failed" or not record.get("passed", record.get("verdict") in PASSED_VERDICTS)


def failed_checks(record: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    return [c for c in record.get(key) or [] if isinstance(c, Mapping) and c.get("passed") is False]


def metric_cell(record: Mapping[str, Any], name: str, key: str) -> str:
    metrics = record.get("metrics") if isinstance(record.get("metrics"), Mapping) else {}
    text = fmt_metric(name, number(metrics.get(key)))
    for check in failed_checks(record, "checks"):
        if check.get("metric") == name:  # the first failed check of this metric says which limit
            op, bound = ("<", "min") if check.get("higher_is_better") else (">", "max")
            source = f", {check['source']}" if check.get("source") not in (None, "threshold") else ""
            return f"❌ **{text}** {op} {bound} {fmt_metric(name, number(check.get('limit')))}{source}"
    return text


def _render(record: Mapping[str, Any]) -> Mapping[str, Any]:
    render = record.get("candidate_render")
    return render if isinstance(render, Mapping) else {}


def _budget(record: Mapping[str, Any], unit: str) -> Mapping[str, Any] | None:
    for check in record.get("budget_checks") or []:
        if isinstance(check, Mapping) and check.get("unit") == unit:
            return check
    return None


def _with_limit(value: str, check: Mapping[str, Any] | None, limit: str | None) -> str:
    if check is not None and check.get("passed") is False:
        return f"❌ **{value}** > max {limit}"
    return f"{value} / {limit}" if limit else value


def memory_cell(record: Mapping[str, Any]) -> str:
    memory = _render(record).get("memory")
    memory = memory if isinstance(memory, Mapping) else {}
    check = _budget(record, "bytes")
    peak = number(check.get("value")) if check else number(memory.get("peak_bytes"))
    if peak is None:
        return "–"
    limits = record.get("limits") if isinstance(record.get("limits"), Mapping) else {}
    limit = number(check.get("limit")) if check else number(limits.get("peak_memory_bytes"))
    kind = {"cuda": "VRAM", "cpu-rss": "RSS"}.get(str(memory.get("kind")), str(memory.get("kind") or ""))
    text = _with_limit(fmt_bytes(peak), check, fmt_bytes(limit) if limit is not None else None)
    return f"{text} ({kind})" if kind else text


def step_statistic(step_times: list[float], statistic: str, warmup: int) -> float | None:
    """The gate's statistic: drop the warm-up steps (unless that leaves none), then median/mean/max."""
    if not step_times:
        return None
    measured = step_times[warmup:] if len(step_times) > warmup else step_times
    if statistic == "mean":
        return statistics.fmean(measured)
    if statistic == "max":
        return max(measured)
    return statistics.median(measured)


def step_cell(record: Mapping[str, Any]) -> str:
    limits = record.get("limits") if isinstance(record.get("limits"), Mapping) else {}
    statistic = str(limits.get("statistic") or "median")
    check = _budget(record, "s")
    if check is not None:
        value = number(check.get("value"))
    else:
        times = [t for t in (number(x) for x in _render(record).get("step_times_s") or []) if t is not None]
        warmup = limits.get("warmup_steps")
        value = step_statistic(times, statistic, warmup if isinstance(warmup, int) else 1)
    if value is None:
        return "–"
    limit = number(check.get("limit")) if check else number(limits.get("step_time_s"))
    text = _with_limit(fmt_seconds(value), check, fmt_seconds(limit) if limit is not None else None)
    return f"{text} ({statistic})"


def verdict_cell(record: Mapping[str, Any]) -> str:
    verdict = str(record.get("verdict") or record.get("outcome") or "?")
    return f"❌ {verdict}" if is_failure(record) else f"✅ {verdict}"


def headline(record: Mapping[str, Any]) -> str:
    """Why a test failed, in one line: its failed checks, else the first line of the reason."""
    parts = []
    for check in failed_checks(record, "checks"):
        name = str(check.get("metric"))
        op, bound = ("<", "min") if check.get("higher_is_better") else (">", "max")
        parts.append(f"{name} {fmt_metric(name, number(check.get('value')))} {op} {bound} "
                     f"{fmt_metric(name, number(check.get('limit')))} ({check.get('source', 'threshold')})")
    for check in failed_checks(record, "budget_checks"):
        fmt = fmt_bytes if check.get("unit") == "bytes" else fmt_seconds
        parts.append(f"{check.get('name')} {fmt(number(check.get('value')))} > max {fmt(number(check.get('limit')))}")
    if parts:
        return "; ".join(parts)
    lines = str(record.get("reason") or "").strip().splitlines()
    return lines[0] if lines else "the test failed after the visual check"


# ---- the summary -------------------------------------------------------------------------------

HEADER = ("case", "verdict", "LPIPS", "SSIM", "PSNR", "peak memory", "step time", "duration")


def row(record: Mapping[str, Any]) -> list[str]:
    duration = number(record.get("duration_s"))
    return [f"`{record.get('id', record.get('nodeid', '?'))}`", verdict_cell(record),
            *(metric_cell(record, name, key) for name, key in METRICS),
            memory_cell(record), step_cell(record), fmt_seconds(duration)]


SCHEME_HEADER = ("scheme", "tests passed", "LPIPS mean", "LPIPS worst", "SSIM worst", "PSNR worst", "stored DiT",
                 "peak memory", "memory at start", "step time (median)", "trade-off")
# when a scheme quantizes more than the DiT, the ranking weighs every component's bytes: so does the table
COMPONENT_COLUMNS = ("quantizes", "stored weights (all components)")


def _checkout_on_path() -> None:
    if str(CHECKOUT) not in sys.path:
        sys.path.insert(0, str(CHECKOUT))


def scheme_sections(records: list[dict[str, Any]]) -> list[str]:
    """A ranked table per checkpoint that ran two or more schemes (none otherwise), ranked by
    quant_guard's scheme table: one source with the HTML report."""
    _checkout_on_path()
    try:
        from quant_guard.report.scheme_table import comparisons as rank_schemes

        comparisons = rank_schemes(records)
    except (OSError, ImportError) as exc:  # a checkout without quant_guard/report
        return [f"> scheme comparison unavailable: {exc}", ""]
    out = []
    for checkpoint, summaries in comparisons.items():
        by_component = any(s.by_component for s in summaries)
        weighed = "stored bytes of every component" if by_component else "stored DiT bytes"
        at = SCHEME_HEADER.index("stored DiT")
        header = SCHEME_HEADER[:at] + COMPONENT_COLUMNS + SCHEME_HEADER[at + 1:] if by_component else SCHEME_HEADER
        out += [f"### Schemes of `{checkpoint}`, best trade-off first", "",
                f"Pareto front of the passing schemes on {weighed} and worst LPIPS, smallest first; "
                "then passing schemes that one of them beats, schemes with a failed test, unmeasured schemes.", "",
                "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for s in summaries:
            kind = f" ({s.memory_kind})" if s.memory_kind and s.peak_bytes is not None else ""
            stored = [", ".join(s.targets), fmt_bytes(s.size_bytes)] if by_component else [fmt_bytes(s.dit_bytes)]
            row_cells = [f"`{s.scheme}`", ("✅ " if s.all_passed else "❌ ") + f"{s.passed}/{s.tests}",
                         fmt_metric("LPIPS", s.lpips_mean), fmt_metric("LPIPS", s.lpips_worst),
                         fmt_metric("SSIM", s.ssim_worst), fmt_metric("PSNR", s.psnr_worst), *stored,
                         fmt_bytes(s.peak_bytes) + kind, fmt_bytes(s.resident_bytes), fmt_seconds(s.step_median_s),
                         s.trade_off]
            out.append("| " + " | ".join(cell(c) for c in row_cells) + " |")
        out.append("")
    return out


def markdown(records: list[dict[str, Any]], notes: list[str], title: str) -> str:
    out = [f"## {title}", ""]
    failed = sum(1 for r in records if is_failure(r))
    verdicts = Counter(str(r.get("verdict")) for r in records)
    if records:
        counts = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items()))
        icon = "❌" if failed else "✅"
        out += [f"{icon} **{len(records)} visual tests: {len(records) - failed} passed, {failed} failed** "
                f"({counts})", ""]
        out += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        out += ["| " + " | ".join(cell(c) for c in row(r)) + " |" for r in records]
        out.append("")
    else:
        out += ["No visual test results.", ""]
    out += [f"> {note}" for note in notes]
    if notes:
        out.append("")
    out += scheme_sections(records)
    failures = [r for r in records if is_failure(r)]
    if failures:
        out += ["### Failures", ""]
        for r in failures:
            reason = str(r.get("reason") or "").strip() or "the test failed after the visual check"
            out += [f"<details><summary><code>{_html(str(r.get('id')))}</code>: {_html(headline(r))}</summary>",
                    "", "```", reason.replace("```", "'''"), "```", "</details>", ""]
    return "\n".join(out)


def moved_since_last_night(history: Path, records: list[dict[str, Any]]) -> str:
    """Per checkpoint, this run's tests that moved most since the run before (quant_guard's trend
    tables, baseline "previous"), as Markdown."""
    _checkout_on_path()
    from quant_guard.store.history import read
    from quant_guard.config.limits import TrendSettings
    from quant_guard.report.trends import build_trends

    out = ["### Moved since last night", ""]
    try:
        store = read(history)
    except FileNotFoundError as exc:
        return "\n".join([*out, f"> {exc}", ""])
    trends = build_trends(store, TrendSettings(baseline="previous"), [str(r.get("id")) for r in records])
    for table in trends.moved:
        out.append(f"**{table.checkpoint}**: {table.baseline or '–'} → {table.latest}"
                   + (f" ({table.note})" if table.note else ""))
        out.append("")
        if table.rows:
            out += ["| " + " | ".join(cell(h) for h in table.headers) + " |", "|" + "---|" * len(table.headers)]
            for r in table.rows:
                out.append("| " + " | ".join(cell(("⚠️ " if c.ok is False else "") + c.text) for c in r.cells) + " |")
            out.append("")
    if not trends.moved:
        out += ["No test of this run is in the history.", ""]
    out += [f"> history line skipped: {line}" for line in trends.skipped]
    return "\n".join(out)


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="report directory (with results.json) or results.json file; several are merged")
    parser.add_argument("--title", default="quant_guard", help="heading of the summary")
    parser.add_argument("--require-results", action="store_true",
                        help="exit 1 when no results were found in any PATH")
    parser.add_argument("--history", type=Path, default=None, metavar="DIR",
                        help="metrics history holding this run: add the 'Moved since last night' tables")
    args = parser.parse_args(argv)
    records, notes = load_records(args.paths)
    sys.stdout.write(markdown(records, notes, args.title) + "\n")
    if args.history is not None and records:
        sys.stdout.write(moved_since_last_night(args.history, records) + "\n")
    return 1 if args.require_results and not records else 0


if __name__ == "__main__":
    raise SystemExit(main())
