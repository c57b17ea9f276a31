"""The sensitivity sweep: which layer groups of a quantized DiT to keep in bf16.

For one checkpoint and one quantization scheme, over its cases and seeds (or a subset), every
layer group (``layer_groups.py``) is measured twice against the bf16 goldens: **kept in bf16**
while the rest is quantized (``exclude_modules`` = the group's layers: what quantizing it costs)
and **quantized alone** (``target_modules`` = the group's layers: what it does on its own). Then a
greedy recommendation: the cheapest set of groups (fewest extra bf16 bytes) whose mixed scheme
meets the target on every case, confirmed by a run of the scheme entry as printed, parsed back
through the configuration's own parser.

Every variant is a DiT swap in the session's one pipeline (``QuantGuardSession.pipeline``): the
text encoders and the VAE are loaded once, each variant's DiT once. Goldens come from the
golden store, rendered and stored once when missing, never rewritten (``gate.golden_for``).

Ranking needs one number per variant: the **margin**, how far inside the target its worst case
lies over every limit the target sets, in natural-log units of error (PSNR by its mean squared
error ratio, LPIPS and the other "lower is better" numbers by their ratio to the limit, SSIM by
the ratio of 1 - SSIM, sharpness by its ratio to the limit; a meaning check is kept or lost).
Negative: outside the target. Whether a variant meets the target is decided by the gate's own
judgement (``judgement.judge``): the scorecard limits and the meaning check count as they do in
the gate. Recorded expected metrics do not: the variants are new schemes with none recorded.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quant_guard.run.cases import VisualCase
from quant_guard.config.project import CheckpointSpec, QuantGuardConfig
from quant_guard.model.families import family_of
from quant_guard.model.layer_groups import GRANULARITIES, LayerGroup, diffusers_patterns, group_layers
from quant_guard.judge.metrics import ImageMetrics
from quant_guard.config.schemes import STORAGE_DTYPES, Quantization, Scheme
from quant_guard.config.thresholds import LIMITS_BY_KEY, MEANING_KEY, ThresholdOverrides, Thresholds
from quant_guard.judge.checks import check_thresholds

if TYPE_CHECKING:
    import numpy as np
    import torch

    from quant_guard.judge.scorecard import Scorecard
    from quant_guard.model.families.base import ModelFamily
    from quant_guard.run.session import QuantGuardSession
    from quant_guard.judge.checks import MetricCheck

METRICS = ("LPIPS", "SSIM", "PSNR")
COMPUTE_BYTES = 2  # bf16: what a layer kept out of quantization stores per parameter
SWEEP_FOLDER = "sweep"  # under the report directory: sweep/<checkpoint>-<scheme>/


class SweepError(ValueError):
    """A sweep that cannot run as asked; the message says why and what would work."""


class Answer(str, Enum):
    ALREADY_MEETS = "already-meets"  # the fully quantized scheme meets the target: keep nothing
    KEEP = "keep"  # keep these groups in bf16
    NO_SUBSET = "no-subset"  # the greedy search found no set of groups, short of all, that meets it


@dataclass(frozen=True)
class CaseMeasure:
    case: str  # the golden's stem, e.g. "red-circle-blue-s0"
    metrics: ImageMetrics
    meets: bool
    margin: float
    failed: tuple[MetricCheck, ...] = ()  # the gate's checks this case fails

    @property
    def failed_limits(self) -> tuple[str, ...]:
        """The names of the numbers outside their limits, e.g. ("sharpness",)."""
        return tuple(c.metric for c in self.failed)


@dataclass(frozen=True)
class Variant:
    """One DiT built with ``quantization`` and every case rendered with it."""

    label: str
    quantization: Quantization
    stored_bytes: int  # the DiT's parameters and buffers as stored
    cases: tuple[CaseMeasure, ...]
    seconds: float

    @property
    def meets(self) -> bool:
        return all(c.meets for c in self.cases)

    @property
    def failing(self) -> int:
        return sum(not c.meets for c in self.cases)

    @property
    def margin(self) -> float:
        return min(c.margin for c in self.cases)

    @property
    def worst(self) -> ImageMetrics:
        """Each metric at its worst over the cases."""
        return ImageMetrics(lpips=max(c.metrics.lpips for c in self.cases),
                            ssim=min(c.metrics.ssim for c in self.cases),
                            psnr=min(c.metrics.psnr for c in self.cases))

    @property
    def failed_limits(self) -> tuple[str, ...]:
        """Every number outside its limit on some case, in the order the checks come."""
        return tuple(dict.fromkeys(name for c in self.cases for name in c.failed_limits))

    @property
    def mean_lpips(self) -> float:
        return sum(c.metrics.lpips for c in self.cases) / len(self.cases)

    def as_dict(self) -> dict[str, Any]:
        worst = self.worst
        return {"label": self.label, "quantize": self.quantization.as_dict(), "stored_bytes": self.stored_bytes,
                "meets": self.meets, "failing": self.failing, "margin": _number(self.margin),
                "worst": {"lpips": worst.lpips, "ssim": worst.ssim, "psnr": _number(worst.psnr)},
                "mean_lpips": self.mean_lpips, "seconds": round(self.seconds, 3),
                "cases": [{"case": c.case, "lpips": c.metrics.lpips, "ssim": c.metrics.ssim,
                           "psnr": _number(c.metrics.psnr), "meets": c.meets, "margin": _number(c.margin),
                           "failed": [check.describe() for check in c.failed]}
                          for c in self.cases]}


@dataclass(frozen=True)
class GroupResult:
    group: LayerGroup
    bf16_bytes: int  # its layers kept in bf16
    quantized_bytes: int  # its layers as the scheme stores them
    kept: Variant  # this group in bf16, the rest quantized
    alone: Variant  # only this group quantized
    gain: float  # kept.margin - the fully quantized margin: what keeping it buys

    @property
    def extra_bytes(self) -> int:
        return self.bf16_bytes - self.quantized_bytes

    def as_dict(self, rank: int) -> dict[str, Any]:
        return {"rank": rank, "name": self.group.name, "kind": self.group.kind, "layers": list(self.group.layers),
                "bf16_bytes": self.bf16_bytes, "quantized_bytes": self.quantized_bytes,
                "extra_bytes": self.extra_bytes, "gain": _number(self.gain),
                "kept": self.kept.as_dict(), "alone": self.alone.as_dict()}


@dataclass(frozen=True)
class Recommendation:
    answer: Answer
    groups: tuple[str, ...] = ()  # kept in bf16, in the order the greedy search added them
    extra_bytes: int = 0
    entry: dict[str, Any] | None = None  # the scheme entry for [tool.quant_guard] (a schemes list item)
    exclude_modules: tuple[str, ...] = ()  # DiffSynth QuantizeConfig(exclude_modules=...)
    skip_modules_pattern: tuple[str, ...] = ()  # diffusers module names (LayerNaming.diffusers_class)
    no_diffusers_name: tuple[str, ...] = ()  # layers the diffusers pattern could not name
    steps: tuple[Variant, ...] = ()  # the greedy search's runs of growing sets
    confirm: Variant | None = None  # the printed entry, built and rendered again
    note: str = ""

    @property
    def confirmed(self) -> bool:
        return self.answer is Answer.ALREADY_MEETS or (self.confirm is not None and self.confirm.meets)

    def as_dict(self) -> dict[str, Any]:
        return {"answer": self.answer.value, "search": "greedy", "groups": list(self.groups),
                "extra_bytes": self.extra_bytes, "entry": self.entry, "exclude_modules": list(self.exclude_modules),
                "skip_modules_pattern": list(self.skip_modules_pattern),
                "no_diffusers_name": list(self.no_diffusers_name), "steps": [s.as_dict() for s in self.steps],
                "confirm": self.confirm.as_dict() if self.confirm else None, "confirmed": self.confirmed,
                "note": self.note}


@dataclass(frozen=True)
class SweepResult:
    checkpoint: str
    scheme: Scheme
    granularity: str
    cases: tuple[VisualCase, ...]
    targets: dict[str, Thresholds]  # golden stem -> the target that case must meet
    deciding_metric: str  # the metric closest to (or furthest past) its limit when fully quantized
    full: Variant
    groups: tuple[GroupResult, ...]  # ranked: the most sensitive first
    recommendation: Recommendation
    worst_case: str  # the fully quantized scheme's worst case (stem)
    goldens_created: int
    seconds: float
    # the worst case's golden, fully quantized ("before") and confirming ("after") images
    images: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    folder: Path | None = None  # where sweep.json and sweep.html were written

    def as_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint, "scheme": self.scheme.as_dict(), "granularity": self.granularity,
            "cases": [{"case": vc.key.stem, "prompt": vc.case.prompt, "seed": vc.seed,
                       "target": {k: v for k, v in vars(t).items()  # the limits that bind this case
                                  if v is not None and (k != "text_cer_max" or vc.case.expect_text)}}
                      for vc in self.cases for t in [self.targets[vc.key.stem]]],
            "deciding_metric": self.deciding_metric, "full": self.full.as_dict(),
            "groups": [g.as_dict(rank) for rank, g in enumerate(self.groups, 1)],
            "recommendation": self.recommendation.as_dict(), "worst_case": self.worst_case,
            "goldens_created": self.goldens_created, "seconds": round(self.seconds, 3),
            "images": {name: f"{name}.png" for name in self.images},
        }


# ---- what to sweep ---------------------------------------------------------------------------

def sweep_scheme(spec: CheckpointSpec, name: str) -> Scheme:
    """A scheme of the checkpoint by id, else a bare ``diffsynth.core.quant`` method name."""
    scheme = next((s for s in spec.schemes if s.id == name), None)
    if scheme is None:
        if name in STORAGE_DTYPES:
            raise SweepError(f"{name} is a storage scheme: DiffSynth stores every linear layer in it, so no "
                             "layer can be kept in bf16; sweep a quantization method instead (e.g. "
                             "torchao_fp8_w8a16 for float8 weights)")
        scheme = Scheme(name, quantization=Quantization(name))
    if scheme.quantization is None or scheme.dit is not None:
        raise SweepError(f"checkpoint {spec.id!r}, scheme {scheme.id!r} ({scheme.describe()}): the sweep varies "
                         "QuantizeConfig's exclude_modules / target_modules, so it needs a quantization method "
                         "applied on load (not float8 storage or a pre-quantized file)")
    return scheme


def select_cases(config: QuantGuardConfig, spec: CheckpointSpec, scheme: Scheme, case_ids: tuple[str, ...] = (),
                 seeds: tuple[int, ...] = ()) -> list[VisualCase]:
    """The checkpoint's configured (case, seed) pairs, or the asked subset of them."""
    available = [c for c in config.cases if spec.id in c.checkpoints]
    unknown = [c for c in case_ids if c not in {a.id for a in available}]
    if unknown:
        raise SweepError(f"checkpoint {spec.id!r} has no case {unknown[0]!r}; its cases: "
                         f"{', '.join(a.id for a in available) or 'none'}")
    chosen = [c for c in available if not case_ids or c.id in case_ids]
    missing = [s for s in seeds if not any(s in c.seeds for c in chosen)]
    if missing:
        raise SweepError(f"seed {missing[0]} is not configured for the chosen cases (their seeds: "
                         f"{', '.join(sorted({str(s) for c in chosen for s in c.seeds}))}); goldens exist for "
                         "configured seeds only")
    out = [VisualCase(spec, c, s, scheme) for c in chosen for s in c.seeds if not seeds or s in seeds]
    if not out:
        raise SweepError(f"checkpoint {spec.id!r} has no cases in {config.source}")
    return out


# ---- margins -----------------------------------------------------------------------------------

def metric_margins(m: ImageMetrics, t: Thresholds, card: Scorecard | None = None) -> dict[str, float]:
    """How far inside each limit, by metric name ("LPIPS", "sharpness", ...; negative: outside):
    a number bounded on both sides counts its nearer bound."""
    out: dict[str, float] = {}
    for check in check_thresholds(m, t, card):
        out[check.metric] = min(out.get(check.metric, math.inf), check_margin(check))
    return out


def check_margin(check: MetricCheck) -> float:
    """How far inside its limit one check lies, in natural-log units of error (negative: outside)."""
    def ratio(limit: float, value: float) -> float:  # ln(limit / value) for errors (lower is better)
        if value <= 0:
            return math.inf
        return -math.inf if limit <= 0 else math.log(limit / value)

    if math.isnan(check.value):
        return -math.inf
    if check.key == MEANING_KEY:
        return math.inf if check.passed else -math.inf
    limit = LIMITS_BY_KEY[check.key]
    if limit.unit == "dB":  # PSNR: the ratio of mean squared errors
        return (check.value - check.limit) * math.log(10) / 10 if math.isfinite(check.value) else math.inf
    if not limit.higher_is_better:
        return ratio(check.limit, check.value)
    if limit.high == 1.0:  # SSIM-like, 1 at best: the error is 1 - value
        return ratio(1 - check.limit, 1 - check.value)
    return ratio(check.value, check.limit)  # a ratio to hold above its limit (sharpness)


def _difference(a: float, b: float) -> float:
    return 0.0 if a == b else a - b  # inf - inf: both identical to the golden


def _number(value: float) -> float | str:
    """JSON has no infinity: "inf" / "-inf" as strings."""
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")


# ---- the run -----------------------------------------------------------------------------------

@dataclass
class _Run:
    session: QuantGuardSession
    spec: CheckpointSpec
    scheme: Scheme
    cases: list[VisualCase]
    targets: dict[str, Thresholds]
    goldens: dict[str, np.ndarray]
    planned: int = 0
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    images: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # label -> stem -> image

    def quantization(self, *, exclude: tuple[str, ...] = (), target: tuple[str, ...] | None = None) -> Quantization:
        base = self.scheme.quantization
        assert base is not None
        return replace(base, target_modules=base.target_modules if target is None else target,
                       exclude_modules=base.exclude_modules + exclude)

    def build(self, label: str, quantization: Quantization) -> Any:
        return self.session.pipeline(self.spec, Scheme(f"{self.scheme.id} ({label})", quantization=quantization))

    def measure(self, label: str, quantization: Quantization, *, pipe: Any = None,
                keep_images: bool = False) -> Variant:
        """Build the DiT (unless ``pipe`` holds it already) and render every case with it."""
        from quant_guard.model.scheme_check import stored_bytes

        start = time.monotonic()
        pipe = pipe if pipe is not None else self.build(label, quantization)
        measures = self.render_cases(label, pipe, keep_images=keep_images)
        variant = Variant(label, quantization, stored_bytes(pipe.dit), measures, time.monotonic() - start)
        self.done += 1
        self._note(variant)
        return variant

    def render_cases(self, label: str, pipe: Any, *, keep_images: bool = False) -> tuple[CaseMeasure, ...]:
        """Render every case with ``pipe`` and judge it against its golden and target."""
        from quant_guard.run.case_plan import render_request
        from quant_guard.run.gate import text_expectation
        from quant_guard.judge.judgement import judge, meaning_unavailable
        from quant_guard.model.render import render
        from quant_guard.judge.semantic import ScorerUnavailable
        from quant_guard.judge.text import OcrUnavailable

        progress = self.session.progress
        measures, kept = [], {}
        for vc in self.cases:
            stem = vc.key.stem
            on_step = progress.for_render(f"{label}: {stem}") if progress else None
            image = render(pipe, render_request(vc, self.session.resolved(vc.checkpoint).t5_sequence_length),
                           on_step=on_step).image
            try:
                judgement = judge(self.goldens[stem], image, self.targets[stem], prompt=vc.case.prompt,
                                  text=text_expectation(vc))
            except ScorerUnavailable as exc:
                raise SweepError(f"{stem}: {meaning_unavailable(exc)}") from None
            except OcrUnavailable as exc:
                raise SweepError(f"{stem}: the text check (expect_text) cannot run: {exc}") from None
            measures.append(CaseMeasure(stem, judgement.metrics, judgement.passed,
                                        min(check_margin(c) for c in judgement.checks),
                                        judgement.failed))
            if keep_images:
                kept[stem] = image
        if keep_images:
            self.images[label] = kept
        return tuple(measures)

    def _note(self, v: Variant) -> None:
        if self.session.progress is None:
            return
        from quant_guard.model.progress import format_duration

        if self.done == 1 and v.meets:
            self.planned = 1  # the fully quantized scheme meets the target: nothing else runs
        elapsed = time.monotonic() - self.started
        left = max(self.planned - self.done, 0)
        eta = f", ETA {format_duration(elapsed / self.done * left)}" if left else ""
        worst = v.worst
        verdict = "meets" if v.meets else f"misses on {v.failing} of {len(v.cases)} cases ({', '.join(v.failed_limits)})"
        self.session.progress.note(
            f"sweep {self.spec.id}/{self.scheme.id} [{self.done}/{max(self.planned, self.done)}] {v.label}: "
            f"worst PSNR {worst.psnr:.2f} dB, LPIPS {worst.lpips:.4f}, "
            f"{verdict} "
            f"({v.seconds:.1f} s; elapsed {format_duration(elapsed)}{eta})")


def run_sweep(session: QuantGuardSession, checkpoint: str, scheme: str, *, granularity: str = "block",
              cases: tuple[str, ...] = (), seeds: tuple[int, ...] = (),
              target: ThresholdOverrides = ThresholdOverrides()) -> SweepResult:
    """Measure every group, recommend, confirm; the caller writes the outputs (``sweep_outputs.write_sweep``)."""
    if granularity not in GRANULARITIES:
        raise SweepError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    spec = sweep_checkpoint_spec(session.config, checkpoint)
    base = sweep_scheme(spec, scheme)
    started = time.monotonic()
    run, created = start_run(session, spec, base, cases, seeds, target)
    chosen, targets, goldens, config = run.cases, run.targets, run.goldens, session.config

    assert base.quantization is not None
    pipe = run.build("fully quantized", base.quantization)
    layers = _targeted_layers(pipe.dit, base.quantization, spec)
    groups = group_layers(layers, granularity, family_of(spec))
    if len(groups) < 2:
        raise SweepError(f"scheme {base.id!r} quantizes {len(layers)} linear layer{'s' if len(layers) != 1 else ''} "
                         f"of {spec.id!r}, {len(groups)} group at granularity {granularity}: there is nothing to "
                         "choose between" + (" (try --granularity layer)" if granularity == "block" else ""))
    run.planned = 1 + 2 * len(groups) + 1
    full = run.measure("fully quantized", base.quantization, pipe=pipe, keep_images=True)
    # measured after a render, like every variant's DiT: bitsandbytes repacks its 4-bit weights on a
    # CPU's first forward
    sizes = _layer_bytes(pipe.dit, layers)
    results = []
    # Already within the target: nothing to keep, and on FLUX.1 ranking 57 groups would take hours.
    for group in groups if not full.meets else ():
        kept = run.measure(f"{group.name} kept in bf16", run.quantization(exclude=group.layers))
        alone = run.measure(f"{group.name} quantized alone", run.quantization(target=group.layers))
        results.append(GroupResult(group, sum(sizes[n][0] for n in group.layers),
                                   sum(sizes[n][1] for n in group.layers), kept, alone,
                                   _difference(kept.margin, full.margin)))
    ranked = tuple(sorted(results, key=lambda g: (-g.gain, g.alone.margin)))
    recommendation = _recommend(run, full, ranked, target, config.source, family_of(spec))
    worst = min(full.cases, key=lambda c: c.margin).case
    images = {"golden": goldens[worst], "before": run.images["fully quantized"][worst]}
    if recommendation.confirm is not None:
        images["after"] = run.images[recommendation.confirm.label][worst]
    return SweepResult(spec.id, base, granularity, tuple(chosen), targets, _deciding_metric(full, targets),
                       full, ranked, recommendation, worst, created, time.monotonic() - started, images)


def sweep_checkpoint_spec(config: QuantGuardConfig, checkpoint: str) -> CheckpointSpec:
    try:
        return config.checkpoint(checkpoint)
    except KeyError:
        raise SweepError(f"no checkpoint {checkpoint!r} in {config.source}; configured: "
                         f"{', '.join(c.id for c in config.checkpoints) or 'none'}") from None


def start_run(session: QuantGuardSession, spec: CheckpointSpec, base: Scheme, cases: tuple[str, ...],
              seeds: tuple[int, ...], target: ThresholdOverrides) -> tuple[_Run, int]:
    """The chosen cases, their goldens (rendered once when missing, never rewritten) and the target
    each must meet (the case's configured thresholds for ``base``, overridden by ``target``); and
    how many goldens were created."""
    from quant_guard.run.gate import golden_for

    config = session.config
    chosen = select_cases(config, spec, base, cases, seeds)
    session.require_lpips_weights()
    goldens, created = {}, 0
    for vc in chosen:
        golden, outcome = golden_for(session, vc)
        goldens[vc.key.stem], created = golden.image, created + (outcome is not None)
    targets = {vc.key.stem: target.apply(vc.configured_thresholds(config.thresholds)) for vc in chosen}
    return _Run(session, spec, base, chosen, targets, goldens), created


def _targeted_layers(dit: torch.nn.Module, q: Quantization, spec: CheckpointSpec) -> list[str]:
    """The linear layers the scheme quantizes."""
    from quant_guard.model.scheme_check import inventory, matches

    return [layer.name for layer in inventory(dit, family_of(spec).vram_layers).layers
            if (q.target_modules is None or matches(layer.name, q.target_modules))
            and not matches(layer.name, q.exclude_modules)]


def _layer_bytes(dit: torch.nn.Module, names: list[str]) -> dict[str, tuple[int, int]]:
    """(bytes in bf16, bytes as the scheme stores them) of each of these layers."""
    from quant_guard.model.scheme_check import stored_bytes

    sizes = {}
    for name in names:
        module = dit.get_submodule(name)
        real = getattr(module, "module", module)  # a VRAM-management wrapper holds the layer as .module
        bias = real.bias.numel() if getattr(real, "bias", None) is not None else 0
        weights = real.in_features * real.out_features if hasattr(real, "in_features") else real.weight.numel()
        sizes[name] = ((weights + bias) * COMPUTE_BYTES, stored_bytes(module))
    return sizes


def _deciding_metric(full: Variant, targets: dict[str, Thresholds]) -> str:
    """The image metric with the least margin when fully quantized: the one the bars show (a
    failing scorecard limit or meaning check is named in the text and in sweep.json)."""
    worst = {m: min(metric_margins(c.metrics, targets[c.case])[m] for c in full.cases) for m in METRICS}
    return min(METRICS, key=lambda m: worst[m])


# ---- the recommendation ------------------------------------------------------------------------

def _recommend(run: _Run, full: Variant, ranked: tuple[GroupResult, ...], target: ThresholdOverrides,
               source: Path, family: ModelFamily | None = None) -> Recommendation:
    """Greedy: one group whose kept-in-bf16 run meets the target (the cheapest such), else groups
    added by gain per extra byte, each growing set measured, until one meets it."""
    if full.meets:
        return Recommendation(Answer.ALREADY_MEETS, note="the fully quantized scheme meets the target on every case")
    helpful = [g for g in ranked if g.gain > 0]
    enough = [g for g in helpful if g.kept.meets]
    steps: list[Variant] = []
    if enough:
        chosen = [min(enough, key=lambda g: (g.extra_bytes, -g.gain))]
    else:
        chosen = []
        for group in sorted(helpful, key=lambda g: g.gain / max(g.extra_bytes, 1), reverse=True):
            chosen.append(group)
            if len(chosen) == 1:
                continue  # measured already: its kept-in-bf16 run misses
            if len(chosen) == len(ranked):
                break  # every group in bf16 is no quantization at all
            layers = tuple(n for g in chosen for n in g.group.layers)
            steps.append(run.measure(f"greedy: {len(chosen)} groups kept in bf16", run.quantization(exclude=layers)))
            if steps[-1].meets:
                break
        if not steps or not steps[-1].meets:
            return _no_subset(full, ranked, helpful, steps)
    exclude = run.scheme.quantization.exclude_modules + tuple(n for g in chosen for n in g.group.layers)  # type: ignore[union-attr]
    entry = scheme_entry(run.scheme, exclude, target)
    confirm = run.measure("confirming run", parse_entry(entry, source).quantization, keep_images=True)  # type: ignore[arg-type]
    patterns, unknown = diffusers_patterns([g.group for g in chosen], family)
    note = "" if confirm.meets else (f"the confirming run misses the target on {confirm.failing} of "
                                     f"{len(confirm.cases)} cases: renders are not reproducible here")
    return Recommendation(Answer.KEEP, tuple(g.group.name for g in chosen), sum(g.extra_bytes for g in chosen),
                          entry, exclude, patterns, unknown, tuple(steps), confirm, note)


def _no_subset(full: Variant, ranked: tuple[GroupResult, ...], helpful: list[GroupResult],
               steps: list[Variant]) -> Recommendation:
    if not helpful:
        why = "keeping any one group in bf16 does not bring the worst case closer to the target"
    elif steps:
        last = steps[-1]
        why = (f"the largest set tried ({last.label}) still misses on {last.failing} of {len(last.cases)} cases "
               f"(worst PSNR {last.worst.psnr:.2f} dB, LPIPS {last.worst.lpips:.4f})")
    else:
        why = f"the one group that helps ({helpful[0].group.name}) is not enough"
    if len(helpful) == len(ranked):
        why += "; only keeping every group, i.e. no quantization, would reach it"
    return Recommendation(Answer.NO_SUBSET, steps=tuple(steps),
                          note=f"no subset of the {len(ranked)} groups reaches the target (greedy search): {why}")


def scheme_entry(base: Scheme, exclude: tuple[str, ...], target: ThresholdOverrides) -> dict[str, Any]:
    """The recommended scheme as an item of a checkpoint's ``schemes`` list."""
    assert base.quantization is not None
    q = replace(base.quantization, exclude_modules=exclude)
    entry: dict[str, Any] = {"id": f"{base.id[:58]}-mixed", **q.as_dict()}
    if q.mode == "dynamic":
        del entry["mode"]  # the default, left out as a person writes the entry
    thresholds = {k: v for k, v in vars(target.over(base.thresholds)).items() if v is not None}
    if thresholds:
        entry["thresholds"] = thresholds
    return entry


def parse_entry(entry: dict[str, Any], source: Path) -> Scheme:
    """The entry read back as the configuration reads it: what the confirming run builds."""
    from quant_guard.config.project import parse_scheme

    return parse_scheme(entry, file=source, where="sweep", key="recommended")
