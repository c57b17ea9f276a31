"""The scheme comparison as the HTML report and the terminal show it: per checkpoint with more
than one scheme in the run, a table ranked by ``scheme_table`` and the trade-off plot of
``scheme_plot``. Formatting only; the numbers and the order come from ``scheme_table``.

When a scheme of the checkpoint quantizes more than the DiT, the one "Stored DiT" column becomes
"Quantizes", one "stored (saved)" column per component some scheme quantizes and one for every
component together; a checkpoint whose schemes all quantize the DiT alone keeps the one column.
Where less of a component was on the computation device as the render began than it stores (a
``cpu_offload`` plan), its cell adds that figure: "57.25 KiB (−56.25 KiB), 0 B on device"."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from quant_guard.report.scheme_plot import plotted, scheme_plot_svg, x_label
from quant_guard.report.scheme_table import SchemeSummary, comparisons
from quant_guard.report.view import Cell, Row, fmt_metric
from quant_guard.config.units import format_bytes, format_seconds

HEADERS = ("Scheme", "Tests passed", "LPIPS mean", "LPIPS worst", "SSIM worst", "PSNR worst", "Stored DiT",
           "Peak memory", "Memory at render start", "Step time (median)", "Trade-off")
CAPTION = ("Best trade-off first: the schemes that passed every test and that no other passing scheme beats on "
           "both stored DiT bytes and worst LPIPS (the Pareto front), smallest first; then passing schemes "
           "that one beats; then schemes with a failed test; then schemes without measurements. Worst over "
           "the tests that measured; step time after each render's warm-up steps.")
# the same columns, short enough for a terminal
TERMINAL_HEADERS = ("scheme", "passed", "LPIPS mean", "LPIPS worst", "SSIM worst", "PSNR worst", "DiT stored", "peak",
                    "at start", "step", "trade-off")


COMPONENT_CAPTION = (" Stored bytes per component as its weights are stored during a render, with what they save "
                     "against the same component in bf16 (– where the run has no bf16 size of it); the ranking "
                     "and the plot weigh every component together. \"on device\": the part of them on the "
                     "computation device when the render began, where that is less (cpu_offload).")


def headers(summaries: Sequence[SchemeSummary], *, terminal: bool = False) -> tuple[str, ...]:
    """The table's headers: ``HEADERS`` (``TERMINAL_HEADERS``), with the stored-bytes column per
    component when a scheme quantizes more than the DiT."""
    base = TERMINAL_HEADERS if terminal else HEADERS
    if not by_component(summaries):
        return base
    at = base.index("DiT stored" if terminal else "Stored DiT")
    saved = "stored (saved)"
    columns = ("quantizes" if terminal else "Quantizes", *(f"{name} {saved}" for name in shown_components(summaries)),
               f"all {saved}" if terminal else f"All weights {saved}")
    return base[:at] + columns + base[at + 1:]


def by_component(summaries: Sequence[SchemeSummary]) -> bool:
    return any(s.by_component for s in summaries)


def shown_components(summaries: Sequence[SchemeSummary]) -> list[str]:
    """The components some scheme quantizes, in the order the renders list them (the DiT first)."""
    targeted = {name for s in summaries for name in s.targets}
    order = [name for s in summaries for name, _ in s.component_bytes] + [n for s in summaries for n in s.targets]
    return [name for name in dict.fromkeys(order) if name in targeted]


@dataclass(frozen=True)
class SchemeComparison:
    checkpoint: str
    rows: tuple[Row, ...]
    svg: str  # markup built by ElementTree (escaped there): the template inserts it as is
    not_plotted: tuple[str, ...]  # schemes without stored bytes or a finite worst LPIPS
    heading: str = ""  # "4 schemes (nf4, ...) against the bf16 golden"
    headers: tuple[str, ...] = HEADERS
    caption: str = CAPTION


def scheme_comparisons(records: Iterable[Mapping[str, Any]]) -> dict[str, SchemeComparison]:
    """Per checkpoint with two or more schemes in ``records``: its table rows and plot."""
    out = {}
    for checkpoint, summaries in comparisons(records).items():
        shown = {s.scheme for s in plotted(summaries)}
        components = shown_components(summaries) if by_component(summaries) else None
        out[checkpoint] = SchemeComparison(
            checkpoint=checkpoint, rows=tuple(_row(s, components) for s in summaries),
            svg=scheme_plot_svg(summaries, title=f"checkpoint {checkpoint}: {x_label(summaries)} against worst "
                                                 "LPIPS, one point per scheme"),
            not_plotted=tuple(s.scheme for s in summaries if s.scheme not in shown),
            heading=against_golden([s.scheme for s in summaries]), headers=headers(summaries),
            caption=CAPTION + (COMPONENT_CAPTION if components is not None else ""))
    return out


def against_golden(schemes: Sequence[str]) -> str:
    """What a summary holds: "nf4 candidate against the bf16 golden" for one scheme,
    "3 schemes (nf4, int8, float8_e4m3fn) against the bf16 golden" for several."""
    if len(schemes) == 1:
        return f"{schemes[0]} candidate against the bf16 golden"
    return f"{len(schemes)} schemes ({', '.join(schemes)}) against the bf16 golden"


def cells(s: SchemeSummary, components: Sequence[str] | None = None) -> list[str]:
    """The table's cells of one scheme, as text (HTML and terminal alike); ``components``: the
    per-component columns (``shown_components``) in place of the DiT's stored bytes."""
    kind = f" ({s.memory_kind})" if s.memory_kind else ""
    stored = [_maybe(format_bytes, s.dit_bytes)] if components is None else [
        ", ".join(s.targets) or "nothing",
        *(stored_saved(s.stored(name), s.saved(name), s.resident(name)) for name in components),
        stored_saved(s.total_bytes, s.total_saved, s.total_resident)]
    return [
        s.scheme, f"{s.passed}/{s.tests}", fmt_metric("LPIPS", s.lpips_mean), fmt_metric("LPIPS", s.lpips_worst),
        fmt_metric("SSIM", s.ssim_worst), fmt_metric("PSNR", s.psnr_worst), *stored,
        _maybe(format_bytes, s.peak_bytes) + (kind if s.peak_bytes is not None else ""),
        _maybe(format_bytes, s.resident_bytes), _maybe(format_seconds, s.step_median_s), s.trade_off,
    ]


def stored_saved(stored: float | None, saved: float | None, resident: float | None = None) -> str:
    """"57.25 KiB (−56.25 KiB)": stored bytes and what they save against bf16 ("(–)": unknown),
    then ", 0 B on device" where less of them was on the computation device at render start."""
    if stored is None:
        return "–"
    on_device = f", {format_bytes(resident)} on device" if resident is not None and resident < stored else ""
    return (f"{format_bytes(stored)} ({'–' if saved is None else '0 B' if saved == 0 else '−' + format_bytes(saved)})"
            + on_device)


def terminal_lines(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """The comparison as plain-text tables, one per checkpoint with two or more schemes."""
    lines = []
    for checkpoint, summaries in comparisons(records).items():
        components = shown_components(summaries) if by_component(summaries) else None
        weighed = "DiT bytes" if components is None else "bytes of every component"
        lines.append(f"checkpoint {checkpoint}: {len(summaries)} schemes, best trade-off first "
                     f"(Pareto front of the passing schemes on stored {weighed} and worst LPIPS, smallest first)")
        rows = [cells(s, components) for s in summaries]
        lines += ["  " + line for line in text_table(headers(summaries, terminal=True), rows)]
    return lines


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell, two spaces apart."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [headers, *rows]]


def _row(s: SchemeSummary, components: Sequence[str] | None) -> Row:
    texts = cells(s, components)
    row_cells = [Cell(texts[0], title=s.description), Cell(texts[1], s.all_passed), *(Cell(t) for t in texts[2:])]
    return Row(tuple(row_cells), anchor=f"case-{s.worst_id}" if s.worst_id else "", failed=not s.all_passed)


def _maybe(fmt: Any, value: float | None) -> str:
    return "–" if value is None else fmt(value)
