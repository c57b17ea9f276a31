"""The scheme comparison of one run: per checkpoint, one summary per candidate scheme (its tests,
worst metrics, stored DiT bytes, memory, step time), in the order that answers "which scheme?".

The stored bytes it weighs are the DiT's, unless a scheme of the checkpoint quantizes another
component (a text encoder, the VAE): then every component's together (``size_bytes``), and each
summary carries what each component stores and saves against bf16, so "DiT-only saves X,
text-encoder-only Y, both X + Y" reads off the table.

The order (``rank``):

1. **front**: schemes that passed every test and that no other passing scheme beats on both
   stored bytes (``size_bytes``) and worst LPIPS (the Pareto front of the passing schemes), smallest first.
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
DIT = "dit"  # the component every family files its DiT under (config.schemes.DIT; standard library only here)
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
    targets: tuple[str, ...] = (DIT,)  # the components it quantizes (its results' ``scheme_spec``)
    component_bytes: tuple[tuple[str, float], ...] = ()  # (component, stored bytes), the most of any render
    # (component, its bytes on the computation device as the denoising loop began), the most of any render
    component_resident: tuple[tuple[str, float], ...] = ()
    # (component, its bytes in the bf16 reference): the checkpoint's, where the run shows them
    bf16_bytes: tuple[tuple[str, float], ...] = ()
    by_component: bool = False  # a scheme of its checkpoint quantizes more than the DiT: weigh every component

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
        return (self.size_bytes is not None and math.isfinite(self.size_bytes)
                and self.lpips_worst is not None and math.isfinite(self.lpips_worst))

    @property
    def size_bytes(self) -> float | None:
        """The stored bytes the ranking and the plot weigh: the DiT's, or every component's
        together when a scheme of the checkpoint quantizes more than the DiT."""
        return self.total_bytes if self.by_component else self.dit_bytes

    @property
    def total_bytes(self) -> float | None:
        """Every component's stored bytes together (None: the renders did not say)."""
        return sum(b for _, b in self.component_bytes) if self.component_bytes else None

    def stored(self, component: str) -> float | None:
        return dict(self.component_bytes).get(component)

    def resident(self, component: str) -> float | None:
        """The component's bytes on the computation device at render start (None: not measured)."""
        return dict(self.component_resident).get(component)

    @property
    def total_resident(self) -> float | None:
        return sum(b for _, b in self.component_resident) if self.component_resident else None

    def saved(self, component: str) -> float | None:
        """Bytes the component stores less than in bf16 (None: one of the two is unknown)."""
        stored, bf16 = self.stored(component), dict(self.bf16_bytes).get(component)
        return None if stored is None or bf16 is None else bf16 - stored

    @property
    def total_saved(self) -> float | None:
        savings = [self.saved(name) for name, _ in self.component_bytes]
        return None if not savings or None in savings else sum(s for s in savings if s is not None)


def compare_schemes(records: Iterable[Mapping[str, Any]]) -> dict[str, list[SchemeSummary]]:
    """Per checkpoint (in record order), its schemes ranked as described in the module docstring."""
    groups: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for r in records:
        groups.setdefault(str(r.get("checkpoint", "")), {}).setdefault(str(r.get("scheme", "")), []).append(r)
    out = {}
    for checkpoint, schemes in groups.items():
        summaries = [summarize(checkpoint, scheme, rows) for scheme, rows in schemes.items()]
        bf16 = tuple(reference_bytes([r for rows in schemes.values() for r in rows], summaries).items())
        by_component = any(set(s.targets) - {DIT} for s in summaries)
        out[checkpoint] = rank([replace(s, bf16_bytes=bf16, by_component=by_component) for s in summaries])
    return out


def reference_bytes(records: Sequence[Mapping[str, Any]], summaries: Sequence[SchemeSummary]) -> dict[str, float]:
    """Each component's bytes in bf16, where the run shows them: the bf16 reference's render (a
    drift check or an update renders it), else a scheme that leaves the component alone."""
    references = [r["reference_render"] for r in records if isinstance(r.get("reference_render"), Mapping)]
    out = dict(_component_bytes(references))
    for s in summaries:
        for name, value in s.component_bytes:
            if name not in s.targets:
                out.setdefault(name, value)
    return out


def targets_of(spec: Any) -> tuple[str, ...]:
    """The components a results.json ``scheme_spec`` quantizes: its ``components``, else the DiT
    (a record without one is a DiT-only scheme's)."""
    if isinstance(spec, Mapping) and isinstance(spec.get("components"), Mapping):
        return tuple(str(name) for name in spec["components"])
    return (DIT,)


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
        targets=targets_of(next((r["scheme_spec"] for r in records if r.get("scheme_spec")), None)),
        component_bytes=_component_bytes(renders),
        component_resident=_component_bytes(renders, "component_resident_bytes"),
    )


def rank(summaries: Sequence[SchemeSummary]) -> list[SchemeSummary]:
    """The summaries with ``rank`` and ``beaten_by`` set, in report order."""
    def size(s: SchemeSummary) -> tuple[float, float]:
        return (s.size_bytes, s.lpips_worst)  # type: ignore[return-value]  # comparable ones only

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
    ab, al, bb, bl = a.size_bytes, a.lpips_worst, b.size_bytes, b.lpips_worst
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


def _component_bytes(renders: Sequence[Mapping[str, Any]],
                     key: str = "component_weight_bytes") -> tuple[tuple[str, float], ...]:
    """Each component's stored bytes (``key``: the part on the device), the most of any render,
    in the renders' order."""
    out: dict[str, float] = {}
    for render in renders:
        weights = render.get(key)
        for name, value in (weights.items() if isinstance(weights, Mapping) else ()):
            number = as_float(value)
            if number is not None:
                out[str(name)] = max(out.get(str(name), number), number)
    return tuple(out.items())


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
