"""The scheme comparison of one run: per checkpoint, one summary per candidate scheme (its tests,
worst metrics, stored DiT bytes, memory, step time), in the order that answers "which scheme?".

The order (``rank``):

1. **front**: schemes that passed every test and that no other passing scheme beats on both
   stored DiT bytes and worst LPIPS (the Pareto front of the passing schemes), smallest first.
   The first row is the smallest scheme that passes and that nothing passing beats on both.
2. **dominated**: passing schemes that another passing scheme beats (named in ``beaten_by``),
   smallest first.
3. **failing**: schemes with a failed or errored test, smallest first (their numbers cover only
   the tests that measured; the pass count says how many those are).
4. **unmeasured**: no stored bytes or no finite worst LPIPS (nothing rendered, a NaN image), in
   configuration order.

"Beats" is Pareto dominance: no larger and no worse, and strictly better in one of the two.

Numbers only, no formatting, and nothing beyond the standard library and ``report/records.py``
(which needs nothing else): ``ci/step_summary.py`` imports this module from the checkout in a job
where the project is not installed. Records are results.json records (plain dicts), as
``report/records.py`` writes them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from quant_guard.report.records import as_float, is_failure

RANKS = ("front", "dominated", "failing", "unmeasured")
_TRADE_OFF = {"front": "Pareto front", "failing": "failed tests", "unmeasured": "not measured"}
MEMORY_KINDS = {"cuda": "VRAM", "cpu-rss": "RSS"}


@dataclass(frozen=True)
class SchemeSummary:
    checkpoint: str
    scheme: str
    description: str
    tests: int
    passed: int
    measured: int  # tests with an LPIPS value
    lpips_mean: float | None
    lpips_worst: float | None  # NaN when a test measured NaN
    ssim_worst: float | None
    psnr_worst: float | None
    dit_bytes: float | None  # stored DiT weights (quantized tensors by their packed data)
    peak_bytes: float | None  # the most of any render
    resident_bytes: float | None  # allocated when a render began, the most of any render
    memory_kind: str  # "VRAM", "RSS" or ""
    step_median_s: float | None  # over every render's steps after its warm-up steps
    worst_id: str = ""  # the test with the worst LPIPS (the report links to it)
    rank: str = "unmeasured"
    beaten_by: str = ""  # a passing scheme that dominates this one (rank "dominated")

    @property
    def all_passed(self) -> bool:
        return self.tests > 0 and self.passed == self.tests

    @property
    def trade_off(self) -> str:
        """Where the scheme stands, in words: "Pareto front", "beaten by <scheme>", ..."""
        return f"beaten by {self.beaten_by}" if self.rank == "dominated" else _TRADE_OFF.get(self.rank, self.rank)

    @property
    def comparable(self) -> bool:
        """Has the two numbers of the trade-off, both finite."""
        return (self.dit_bytes is not None and math.isfinite(self.dit_bytes)
                and self.lpips_worst is not None and math.isfinite(self.lpips_worst))


def compare_schemes(records: Iterable[Mapping[str, Any]]) -> dict[str, list[SchemeSummary]]:
    """Per checkpoint (in record order), its schemes ranked as described in the module docstring."""
    groups: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for r in records:
        groups.setdefault(str(r.get("checkpoint", "")), {}).setdefault(str(r.get("scheme", "")), []).append(r)
    return {checkpoint: rank([summarize(checkpoint, scheme, rows) for scheme, rows in schemes.items()])
            for checkpoint, schemes in groups.items()}


def comparisons(records: Iterable[Mapping[str, Any]], *, minimum: int = 2) -> dict[str, list[SchemeSummary]]:
    """``compare_schemes`` for the checkpoints with at least ``minimum`` schemes in the records:
    what the report, the terminal and the step summary show (one scheme compares with nothing)."""
    return {c: rows for c, rows in compare_schemes(records).items() if len(rows) >= minimum}


def summarize(checkpoint: str, scheme: str, records: Sequence[Mapping[str, Any]]) -> SchemeSummary:
    renders = [r["candidate_render"] for r in records if isinstance(r.get("candidate_render"), Mapping)]
    memories = [m for m in (render.get("memory") for render in renders) if isinstance(m, Mapping)]
    lpips = _metric(records, "lpips")
    kinds = {MEMORY_KINDS.get(str(m.get("kind")), str(m.get("kind") or "")) for m in memories} - {""}
    return SchemeSummary(
        checkpoint=checkpoint, scheme=scheme,
        description=next((str(r["scheme_description"]) for r in records if r.get("scheme_description")), ""),
        tests=len(records), passed=sum(not is_failure(r) for r in records), measured=len(lpips),
        lpips_mean=statistics.fmean(lpips) if lpips else None, lpips_worst=_worst(lpips, max),
        ssim_worst=_worst(_metric(records, "ssim"), min), psnr_worst=_worst(_metric(records, "psnr"), min),
        dit_bytes=_most(render.get("dit_weight_bytes") for render in renders),
        peak_bytes=_most(m.get("peak_bytes") for m in memories),
        resident_bytes=_most(m.get("at_start_bytes") for m in memories),
        memory_kind="/".join(sorted(kinds)),
        step_median_s=_step_median(records), worst_id=_worst_id(records),
    )


def rank(summaries: Sequence[SchemeSummary]) -> list[SchemeSummary]:
    """The summaries with ``rank`` and ``beaten_by`` set, in report order."""
    def size(s: SchemeSummary) -> tuple[float, float]:
        return (s.dit_bytes, s.lpips_worst)  # type: ignore[return-value]  # comparable ones only

    contenders = sorted((s for s in summaries if s.comparable and s.all_passed), key=size)
    front, dominated = [], []
    for s in contenders:
        winner = next((o for o in contenders if dominates(o, s)), None)
        if winner is None:
            front.append(_with(s, "front"))
        else:
            dominated.append(_with(s, "dominated", winner.scheme))
    failing = [_with(s, "failing") for s in sorted((s for s in summaries if s.comparable and not s.all_passed),
                                                    key=size)]
    unmeasured = [_with(s, "unmeasured") for s in summaries if not s.comparable]
    return front + dominated + failing + unmeasured


def dominates(a: SchemeSummary, b: SchemeSummary) -> bool:
    """``a`` is no larger and no worse than ``b``, and strictly better in one (both comparable)."""
    ab, al, bb, bl = a.dit_bytes, a.lpips_worst, b.dit_bytes, b.lpips_worst
    assert ab is not None and al is not None and bb is not None and bl is not None
    return ab <= bb and al <= bl and (ab < bb or al < bl)


# ---- helpers (results.json encodes non-finite floats as "inf", "-inf", "nan") ----------------

def _with(s: SchemeSummary, rank_name: str, beaten_by: str = "") -> SchemeSummary:
    return replace(s, rank=rank_name, beaten_by=beaten_by)


def _metric(records: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    out = []
    for r in records:
        metrics = r.get("metrics")
        value = as_float(metrics.get(key)) if isinstance(metrics, Mapping) else None
        if value is not None:
            out.append(value)
    return out


def _worst(values: list[float], pick: Any) -> float | None:
    """The worst value, NaN when any is NaN (a NaN image is never a good one)."""
    if not values:
        return None
    return math.nan if any(math.isnan(v) for v in values) else float(pick(values))


def _worst_id(records: Sequence[Mapping[str, Any]]) -> str:
    scored = []
    for r in records:
        values = _metric([r], "lpips")
        if values and not math.isnan(values[0]):
            scored.append((values[0], str(r.get("id", ""))))
    return max(scored, key=lambda t: t[0])[1] if scored else ""


def _most(values: Iterable[Any]) -> float | None:
    numbers = [v for v in (as_float(x) for x in values) if v is not None]
    return max(numbers) if numbers else None


def _step_median(records: Sequence[Mapping[str, Any]]) -> float | None:
    """Median over every render's step times after its warm-up steps (the checkpoint's
    ``warmup_steps``, default 1; a render too short keeps all), like the gate's budget."""
    steps: list[float] = []
    for r in records:
        render = r.get("candidate_render")
        if not isinstance(render, Mapping):
            continue
        times = [t for t in (as_float(x) for x in render.get("step_times_s") or []) if t is not None]
        limits = r.get("limits")
        warmup = limits.get("warmup_steps", 1) if isinstance(limits, Mapping) else 1
        warmup = warmup if isinstance(warmup, int) and not isinstance(warmup, bool) else 1
        steps.extend(times[warmup:] if len(times) > warmup else times)
    return statistics.median(steps) if steps else None
