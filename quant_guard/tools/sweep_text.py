"""The sensitivity sweep on the terminal: the ranked table, the recommendation, and the
recommended scheme as a TOML entry, a DiffSynth exclude list and a diffusers pattern."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from quant_guard.judge.metrics import ImageMetrics
from quant_guard.model.families import family_of
from quant_guard.tools.component_sweep import ComponentSweepResult
from quant_guard.tools.sweep import Answer, SweepResult, Variant
from quant_guard.config.thresholds import IMAGE_METRICS, LIMITS, Thresholds
from quant_guard.config.units import format_bytes


def format_sweep(result: SweepResult) -> str:
    """Everything ``quant-guard sweep`` prints on stdout."""
    return "\n".join([*_header(result), "", *_table(result), "", *_recommendation(result)]) + "\n"


def _header(r: SweepResult) -> list[str]:
    seeds = len(r.cases)
    lines = [f"sensitivity sweep: checkpoint {r.checkpoint}, scheme {r.scheme.id} ({r.scheme.describe()}), "
             f"{seeds} case{'s' if seeds != 1 else ''} ({', '.join(vc.key.stem for vc in r.cases)}), "
             f"granularity {r.granularity}"]
    lines.append(f"target {describe_targets(r.targets)}")
    f = r.full
    verdict = "meets the target" if f.meets else f"misses the target on {f.failing} of {len(f.cases)} cases"
    if f.failed_limits:
        verdict += f" ({', '.join(f.failed_limits)})"
    lines.append(f"fully quantized: DiT {format_bytes(f.stored_bytes)} stored; {_worst(f.worst)}: {verdict}")
    return lines


def describe_targets(targets: Mapping[str, Thresholds]) -> str:
    """"on every case: ..." when the cases share one target, else the cases of each target."""
    stems: dict[Thresholds, list[str]] = {}
    for stem, t in targets.items():
        stems.setdefault(t, []).append(stem)
    if len(stems) == 1:
        return f"on every case: {describe_target(next(iter(stems)))}"
    return "per case: " + "; ".join(f"{', '.join(s)}: {describe_target(t)}" for t, s in stems.items())


def describe_target(t: Thresholds) -> str:
    """Every limit the target sets, the scorecard's and the meaning check included."""
    parts = [f"LPIPS <= {t.lpips_max:.4f}, SSIM >= {t.ssim_min:.4f}, PSNR >= {t.psnr_min:.2f} dB"]
    for limit in LIMITS:
        value = t.limit(limit)
        if value is not None and limit.value not in IMAGE_METRICS:
            parts.append(f"{limit.metric} {'>=' if limit.higher_is_better else '<='} {value:g}{limit.unit}")
    if t.scorer:
        parts.append(f"meaning kept ({t.scorer})")
    return ", ".join(parts)


def _worst(m: ImageMetrics) -> str:
    return f"worst LPIPS {m.lpips:.4f}, SSIM {m.ssim:.4f}, PSNR {m.psnr:.2f} dB"


def _table(r: SweepResult) -> list[str]:
    if not r.groups:
        return ["groups not measured: the fully quantized scheme meets the target already (a stricter target, "
                "e.g. --target-psnr, ranks them)"]
    head = ("rank", "group", "layers", "bf16", "quantized", "extra",
            "kept: LPIPS", "SSIM", "PSNR", "meets", "alone: LPIPS", "SSIM", "PSNR")
    rows = [head]
    for rank, g in enumerate(r.groups, 1):
        k, a = g.kept.worst, g.alone.worst
        rows.append((str(rank), g.group.name, str(len(g.group.layers)), format_bytes(g.bf16_bytes),
                     format_bytes(g.quantized_bytes), "+" + format_bytes(g.extra_bytes),
                     f"{k.lpips:.4f}", f"{k.ssim:.4f}", f"{k.psnr:.2f}", "yes" if g.kept.meets else "no",
                     f"{a.lpips:.4f}", f"{a.ssim:.4f}", f"{a.psnr:.2f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    left = {1}  # the group name reads from the left, numbers from the right
    lines = ["groups ranked by what keeping them in bf16 buys (worst case of each run; \"kept\": the group in "
             "bf16, the rest quantized; \"alone\": only the group quantized)"]
    for row in rows:
        lines.append("  ".join(cell.ljust(w) if i in left else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    return lines


def _recommendation(r: SweepResult) -> list[str]:
    rec = r.recommendation
    if rec.answer is Answer.ALREADY_MEETS:
        return [f"recommendation: none needed: the fully quantized {r.scheme.id} scheme already meets the target "
                "on every case; no group has to stay in bf16"]
    if rec.answer is Answer.NO_SUBSET:
        return [f"recommendation: {rec.note}"]
    assert rec.confirm is not None and rec.entry is not None
    c = rec.confirm
    lines = [f"recommendation (greedy search, cheapest first; not exhaustive): keep {len(rec.groups)} group"
             f"{'s' if len(rec.groups) != 1 else ''} in bf16: {', '.join(rec.groups)} "
             f"(+{format_bytes(rec.extra_bytes)}: DiT {format_bytes(r.full.stored_bytes)} -> "
             f"{format_bytes(c.stored_bytes)} stored)"]
    for step in rec.steps:
        lines.append(f"  {step.label}: {_worst(step.worst)}, {_verdict(step, 'meets', 'misses')}")
    verdict = ("meets the target on every case" if c.meets
               else f"MISSES the target on {c.failing} of {len(c.cases)} cases ({', '.join(c.failed_limits)})")
    lines.append(f"confirming run of the mixed scheme: {_worst(c.worst)}: {verdict}")
    if rec.note:
        lines.append(f"note: {rec.note}")
    lines += ["", f"scheme entry for [tool.quant_guard]: add it to the schemes list of checkpoint {r.checkpoint!r}",
              *("  " + line for line in toml_entry(rec.entry).splitlines()),
              "", "DiffSynth QuantizeConfig(exclude_modules=...):",
              "  " + json.dumps(list(rec.exclude_modules)),
              "", f"diffusers skip_modules_pattern ({_diffusers_class(r)} module names):",
              "  " + python_tuple(rec.skip_modules_pattern)]
    if rec.no_diffusers_name:
        lines.append(f"  (no diffusers name known for: {', '.join(rec.no_diffusers_name)})")
    return lines


def _verdict(v: Variant, meets: str, misses: str) -> str:
    return meets if v.meets else f"{misses} ({', '.join(v.failed_limits)})"


def toml_entry(entry: dict[str, Any]) -> str:
    """An inline TOML table for a ``schemes = [...]`` list, its module lists one name a line."""
    parts = []
    for key, value in entry.items():
        if isinstance(value, list) and len(value) > 1:
            inner = "".join(f"\n  {_toml_value(v)}," for v in value)
            parts.append(f"{key} = [{inner}\n]")
        else:
            parts.append(f"{key} = {_toml_value(value)}")
    return "{ " + ", ".join(parts) + " },"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {type(value).__name__} {value!r}")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def python_tuple(patterns: tuple[str, ...]) -> str:
    """Raw strings, as a person pastes them into Python."""
    items = [f'r"{p}"' for p in patterns]
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def _diffusers_class(r: SweepResult) -> str:
    """The diffusers transformer whose module names the pattern uses: the checkpoint's family's."""
    return family_of(r.cases[0].checkpoint if r.cases else None).layer_naming.diffusers_class


def format_component_sweep(r: ComponentSweepResult) -> str:
    """Everything ``quant-guard sweep --groups components`` prints on stdout."""
    seeds = len(r.cases)
    lines = [f"component sweep: checkpoint {r.checkpoint}, {r.scheme.describe()}, {seeds} case"
             f"{'s' if seeds != 1 else ''} ({', '.join(vc.key.stem for vc in r.cases)})",
             f"target {describe_targets(r.targets)}", ""]
    head = ("rank", "component", "bf16", "quantized", "saved", "mean LPIPS", "LPIPS/GiB saved", "worst PSNR", "meets")
    rows = [head]
    for rank, c in enumerate(r.ranked, 1):
        rows.append((str(rank), c.name, format_bytes(c.bf16_bytes), format_bytes(c.quantized_bytes),
                     format_bytes(c.saved_bytes), f"{c.cost:.5f}", f"{c.cost_per_gib:.4g}",
                     f"{c.alone.worst_psnr:.2f}", "yes" if c.alone.meets else "no"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines.append("components ranked by quality lost per byte saved, the costliest first (each quantized alone, "
                 "the others bf16; mean LPIPS against the bf16 goldens)")
    lines += ["  ".join(cell.ljust(w) if i == 1 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
              .rstrip() for row in rows]
    rec = r.recommendation
    lines.append("")
    for step in rec.steps:
        lines.append(f"  tried {'+'.join(step.components)} together: mean LPIPS {step.mean_lpips:.5f}, worst PSNR "
                     f"{step.worst_psnr:.2f} dB, {'meets' if step.meets else 'misses'} the target")
    if rec.entry is None:
        lines.append(f"recommendation: {rec.note}")
        return "\n".join(lines) + "\n"
    lines.append(f"recommendation (greedy, cheapest quality per byte first): quantize {', '.join(rec.components)} "
                 f"(saves {format_bytes(rec.saved_bytes)} of {format_bytes(sum(r.reference_bytes.values()))})")
    if rec.note:
        lines.append(f"note: {rec.note}")
    lines += ["", f"scheme entry for [tool.quant_guard]: add it to the schemes list of checkpoint {r.checkpoint!r}",
              "  " + toml_entry(rec.entry)]
    return "\n".join(lines) + "\n"
