"""The sensitivity sweep over components (``quant-guard sweep --groups components``): which of a
checkpoint's model components (the DiT, each text encoder, the VAE) to quantize.

Each component is quantized **alone** (the others bf16) and every case is rendered and judged
against the bf16 goldens, as the layer-group sweep does (``sweep.py``: the same goldens, targets,
margins and judgement). A component's **cost** is the quality it loses, the mean LPIPS of its
renders against the goldens, and its **saving** the bytes it stores less than in bf16; the ranking
puts the component that costs the most quality per byte saved first. The recommendation is
greedy the other way round: components are added cheapest quality per byte first, each growing
set measured, a component kept only while the set still meets the target, so the printed scheme
(a ``components = {...}`` entry, parsed back through the configuration's parser) quantizes as
much as the target allows.

How each component is quantized comes from ``--scheme``: a storage dtype or method name applies
to every component; a configured scheme that names its components sweeps those, each in its own
storage. Every variant is a component swap in the session's one pipeline (``swap_components``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quant_guard.config.families import SECOND_DIT
from quant_guard.config.schemes import DIT, REFERENCE, STORAGE_DTYPES, ComponentScheme, Quantization, Scheme
from quant_guard.config.thresholds import ThresholdOverrides, Thresholds
from quant_guard.model.families import family_of
from quant_guard.config.project import parse_scheme
from quant_guard.tools.sweep import CaseMeasure, SweepError, _number, start_run, sweep_checkpoint_spec

if TYPE_CHECKING:
    from quant_guard.config.project import CheckpointSpec
    from quant_guard.run.cases import VisualCase
    from quant_guard.run.session import QuantGuardSession

GIB = 2**30


@dataclass(frozen=True)
class Measured:
    """A set of components quantized together (the others bf16), every case rendered and judged."""

    components: tuple[str, ...]
    cases: tuple[CaseMeasure, ...]
    stored_bytes: dict[str, int]  # each component's bytes as stored under this set's scheme
    seconds: float = 0.0

    @property
    def meets(self) -> bool:
        return all(c.meets for c in self.cases)

    @property
    def margin(self) -> float:
        return min(c.margin for c in self.cases)

    @property
    def mean_lpips(self) -> float:
        return sum(c.metrics.lpips for c in self.cases) / len(self.cases)

    @property
    def worst_psnr(self) -> float:
        return min(c.metrics.psnr for c in self.cases)

    def as_dict(self) -> dict[str, Any]:
        return {"components": list(self.components), "meets": self.meets, "margin": _number(self.margin),
                "mean_lpips": self.mean_lpips, "worst_psnr": _number(self.worst_psnr),
                "stored_bytes": self.stored_bytes, "seconds": round(self.seconds, 3),
                "cases": [{"case": c.case, "lpips": c.metrics.lpips, "ssim": c.metrics.ssim,
                           "psnr": _number(c.metrics.psnr), "meets": c.meets,
                           "failed": [check.describe() for check in c.failed]} for c in self.cases]}


@dataclass(frozen=True)
class ComponentResult:
    """One component quantized alone."""

    name: str
    bf16_bytes: int  # what it stores in the bf16 reference
    alone: Measured

    @property
    def quantized_bytes(self) -> int:
        return self.alone.stored_bytes[self.name]

    @property
    def saved_bytes(self) -> int:
        return self.bf16_bytes - self.quantized_bytes

    @property
    def cost(self) -> float:
        """The quality it loses: the mean LPIPS of its renders against the goldens."""
        return self.alone.mean_lpips

    @property
    def cost_per_gib(self) -> float:
        """Quality lost per GiB saved (inf: it loses quality and saves nothing)."""
        if self.saved_bytes <= 0:
            return math.inf if self.cost > 0 else 0.0
        return self.cost / (self.saved_bytes / GIB)

    def as_dict(self, rank: int) -> dict[str, Any]:
        return {"rank": rank, "component": self.name, "bf16_bytes": self.bf16_bytes,
                "quantized_bytes": self.quantized_bytes, "saved_bytes": self.saved_bytes, "cost": self.cost,
                "cost_per_gib": _number(self.cost_per_gib), "alone": self.alone.as_dict()}


def rank_components(results: list[ComponentResult] | tuple[ComponentResult, ...]) -> tuple[ComponentResult, ...]:
    """The component costing the most quality per byte saved first (ties: the one outside the target
    by more first)."""
    return tuple(sorted(results, key=lambda r: (-r.cost_per_gib, r.alone.margin)))


@dataclass(frozen=True)
class ComponentRecommendation:
    components: tuple[str, ...]  # quantized, in the order the greedy search added them; () = none
    saved_bytes: int
    entry: dict[str, Any] | None  # the scheme entry for a checkpoint's schemes list
    steps: tuple[Measured, ...]  # the sets the search measured beyond single components
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"components": list(self.components), "saved_bytes": self.saved_bytes, "entry": self.entry,
                "steps": [s.as_dict() for s in self.steps], "note": self.note}


def recommend_components(ranked: tuple[ComponentResult, ...], measure: Callable[[tuple[str, ...]], Measured],
                         entry: Callable[[tuple[str, ...]], dict[str, Any]]) -> ComponentRecommendation:
    """Greedy: add components cheapest quality per byte saved first; keep one while the growing
    set meets the target. A component that misses the target alone is never added (its error
    only grows with others quantized too); one that saves nothing is not worth its risk."""
    chosen: list[ComponentResult] = []
    steps: list[Measured] = []
    skipped: list[str] = []
    for result in reversed(ranked):
        if result.saved_bytes <= 0:
            skipped.append(f"{result.name} (saves nothing)")
            continue
        if not result.alone.meets:
            skipped.append(f"{result.name} (misses the target alone)")
            continue
        trial = tuple(r.name for r in chosen) + (result.name,)
        if chosen:  # a single component was measured alone already
            steps.append(measure(trial))
            if not steps[-1].meets:
                skipped.append(f"{result.name} (misses it with {'+'.join(r.name for r in chosen)})")
                continue
        chosen.append(result)
    names = tuple(r.name for r in chosen)
    note = f"left in bf16: {', '.join(skipped)}" if skipped else ""
    if not chosen:
        return ComponentRecommendation((), 0, None, tuple(steps),
                                       "no component meets the target quantized alone: keep the bf16 reference")
    return ComponentRecommendation(names, sum(r.saved_bytes for r in chosen), entry(names), tuple(steps), note)


@dataclass(frozen=True)
class ComponentSweepResult:
    checkpoint: str
    scheme: Scheme  # how each component is quantized (``component_plan``)
    cases: tuple[VisualCase, ...]
    targets: dict[str, Thresholds]
    reference_bytes: dict[str, int]  # each component in bf16
    ranked: tuple[ComponentResult, ...]
    recommendation: ComponentRecommendation
    goldens_created: int
    seconds: float
    folder: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "groups": "components", "scheme": self.scheme.as_dict(),
                "cases": [vc.key.stem for vc in self.cases], "reference_bytes": self.reference_bytes,
                "ranked": [r.as_dict(rank) for rank, r in enumerate(self.ranked, 1)],
                "recommendation": self.recommendation.as_dict(), "goldens_created": self.goldens_created,
                "seconds": round(self.seconds, 3)}


# ---- what each component is quantized with ---------------------------------------------------

def component_plan(spec: CheckpointSpec, name: str) -> dict[str, ComponentScheme]:
    """Component -> how the sweep quantizes it: a configured scheme naming its components gives
    its targets; a DiT-only scheme or a bare storage dtype / method name applies to every model
    component of the checkpoint's family."""
    scheme = next((s for s in spec.schemes if s.id == name), None)
    # a second DiT is no component of its own: it follows the DiT (``Scheme.component``)
    components = tuple(c for c in family_of(spec).model_components if c != SECOND_DIT)
    if scheme is None:
        how = ComponentScheme(name) if name in STORAGE_DTYPES else ComponentScheme(quantization=Quantization(name))
        return {c: how for c in components}
    if scheme.is_reference:
        raise SweepError(f"scheme {scheme.id!r} quantizes nothing")
    own = [c for c in scheme.targets if scheme.component(c).file is not None]
    if own:  # the files are the scheme's, loaded under its id; a variant of the sweep would miss them
        raise SweepError(f"checkpoint {spec.id!r}, scheme {scheme.id!r}: its own {'DiT' if own[0] == DIT else own[0]} "
                         "file is that scheme's alone; name a storage dtype or method (or a scheme with components "
                         "quantized on load) to sweep components")
    if scheme.others:
        return {c: scheme.component(c) for c in scheme.targets}
    return {c: scheme.dit_scheme for c in components}


def sweep_target(spec: CheckpointSpec, name: str, target: ThresholdOverrides) -> ThresholdOverrides:
    """The thresholds a configured scheme ``name`` sets for itself, the command's ``target`` on top
    (what every variant is held to, and the recommended entry carries)."""
    configured = next((s.thresholds for s in spec.schemes if s.id == name), ThresholdOverrides())
    return target.over(configured)


def scheme_of(scheme_id: str, plan: dict[str, ComponentScheme], names: tuple[str, ...]) -> Scheme:
    """The scheme quantizing the components ``names`` as ``plan`` says, the others bf16."""
    dit = plan[DIT] if DIT in names else ComponentScheme()
    return Scheme(scheme_id, storage_dtype=dit.storage_dtype, quantization=dit.quantization, dit=dit.file,
                  others=tuple(sorted((n, plan[n]) for n in names if n != DIT)))


def component_entry(scheme_id: str, plan: dict[str, ComponentScheme], names: tuple[str, ...],
                    target: ThresholdOverrides = ThresholdOverrides()) -> dict[str, Any]:
    """The scheme as an item of a checkpoint's ``schemes`` list: ``{ id = ..., components = {...} }``,
    each component by its bare storage dtype or method name where it has no options."""
    def how(c: ComponentScheme) -> str | dict[str, Any]:
        if c.file is not None:
            raise SweepError(f"a component's own file ({c.file.describe()}) has no entry form here")
        if c.quantization is None:
            return c.storage_dtype
        table = {k: v for k, v in c.quantization.as_dict().items() if not (k == "mode" and v == "dynamic")}
        return table["method"] if list(table) == ["method"] else table

    entry: dict[str, Any] = {"id": scheme_id, "components": {n: how(plan[n]) for n in names}}
    thresholds = {k: v for k, v in vars(target).items() if v is not None}
    if thresholds:
        entry["thresholds"] = thresholds
    return entry


# ---- the run -----------------------------------------------------------------------------------

def run_component_sweep(session: QuantGuardSession, checkpoint: str, scheme: str, *, cases: tuple[str, ...] = (),
                        seeds: tuple[int, ...] = (),
                        target: ThresholdOverrides = ThresholdOverrides()) -> ComponentSweepResult:
    """Measure each component quantized alone, rank them, recommend a component scheme."""
    from quant_guard.model.pipelines import check_components

    spec = sweep_checkpoint_spec(session.config, checkpoint)
    plan = component_plan(spec, scheme)
    target = sweep_target(spec, scheme, target)
    everything = scheme_of(scheme, plan, tuple(plan))
    started = time.monotonic()
    # each case's target: its configured thresholds for the DiT quantized this way (those measured
    # for a storage dtype or method), else for the scheme of every swept component (the defaults)
    run, created = start_run(session, spec, scheme_of(scheme, plan, (DIT,)) if DIT in plan else everything,
                             cases, seeds, target)
    resolved = session.resolved(spec)
    reference = check_components(session.pipeline(spec, REFERENCE), resolved, REFERENCE)

    def measure(names: tuple[str, ...]) -> Measured:
        start = time.monotonic()
        label = "+".join(names)
        variant = scheme_of(f"{scheme} ({label})", plan, names)
        pipe = session.pipeline(spec, variant)  # swaps the components that differ, checks them
        measures = run.render_cases(label, pipe)
        out = Measured(names, measures, check_components(pipe, resolved, variant), time.monotonic() - start)
        if session.progress is not None:
            verdict = "meets" if out.meets else "misses"
            session.progress.note(f"sweep {spec.id}/{scheme} components {label}: mean LPIPS {out.mean_lpips:.4f}, "
                                  f"worst PSNR {out.worst_psnr:.2f} dB, {verdict} the target ({out.seconds:.1f} s)")
        return out

    ranked = rank_components([ComponentResult(name, reference[name], measure((name,))) for name in plan])
    entry_id = f"{scheme[:48]}-components"

    def entry(names: tuple[str, ...]) -> dict[str, Any]:
        out = component_entry(entry_id, plan, names, target)
        # read back as a person pasting it gets it: the scheme the search measured
        parsed = parse_scheme(out, file=session.config.source, where="sweep", key="recommended", family=spec.family)
        measured = scheme_of(entry_id, plan, names)
        if any(parsed.component(n) != measured.component(n) for n in family_of(spec).model_components):
            raise SweepError(f"the recommended entry {out} does not read back as the measured scheme "
                             f"({measured.describe()})")
        return out

    recommendation = recommend_components(ranked, measure, entry)
    return ComponentSweepResult(spec.id, everything, tuple(run.cases), run.targets, reference, ranked,
                                recommendation, created, time.monotonic() - started)


def write_component_sweep(result: ComponentSweepResult, report_dir: Path) -> ComponentSweepResult:
    """sweep.json under ``report_dir/sweep/<checkpoint>-<scheme>-components/``."""
    import json

    from quant_guard.store.atomic import atomic_write
    from quant_guard.tools.sweep import SWEEP_FOLDER

    folder = report_dir / SWEEP_FOLDER / f"{result.checkpoint}-{result.scheme.id}-components"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "sweep.json", (json.dumps(result.as_dict(), indent=2, ensure_ascii=False) + "\n").encode())
    return replace(result, folder=folder)
