"""The view-model of the HTML report: what the templates show, computed from results.json
records (plain dicts). Numbers are formatted here; the templates only lay them out."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quant_guard.report.clip_view import ClipView, clip_view
from quant_guard.report.records import as_float, headline, is_failure
from quant_guard.config.thresholds import DIMENSIONS, LIMITS, LIMITS_BY_KEY
from quant_guard.config.units import format_bytes, format_seconds

METRICS = ("LPIPS", "SSIM", "PSNR")
# Scorecard numbers in the tables: (heading, Scorecard.values() key, decimals)
_SCORE_COLUMNS = (("ΔE p95", "colour_delta_e_p95", 2), ("Sharpness", "sharpness", 2))
_DECIMALS = {limit.metric: (1 if limit.unit == "°" else 2 if limit.dimension in ("colour", "sharpness", "text") else 4)
             for limit in LIMITS if limit.value not in ("lpips", "ssim", "psnr")}
_FIELD = {"LPIPS": "lpips", "SSIM": "ssim", "PSNR": "psnr"}
_ENV_KEYS = ("device", "device_name", "compute_capability", "driver", "torch", "torch_cuda", "cudnn", "diffsynth",
             "cpu_features", "determinism", "quant_guard", "python")


def fmt_metric(metric: str, value: Any) -> str:
    v = as_float(value)
    if v is None:
        return "–"
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "∞ dB" if metric == "PSNR" else "∞"
    if metric in _DECIMALS:
        return f"{v:.{_DECIMALS[metric]}f}" + ("°" if metric == "hue shift" else "")
    return f"{v:.2f} dB" if metric == "PSNR" else f"{v:.4f}"


@dataclass(frozen=True)
class Cell:
    text: str
    ok: bool | None = None  # None: no limit to judge against
    title: str = ""


@dataclass(frozen=True)
class Row:
    cells: tuple[Cell, ...]
    anchor: str = ""
    failed: bool = False


@dataclass(frozen=True)
class Region:
    index: int
    left: float  # percentages of the image, for the boxes drawn over the maps
    top: float
    width_pct: float
    height_pct: float
    label: str
    golden: str
    candidate: str
    display: int  # on-screen side of a crop, px


@dataclass(frozen=True)
class CaseView:
    anchor: str
    id: str
    checkpoint: str
    case: str
    seed: int
    prompt: str
    scheme: str
    verdict: str
    failed: bool
    headline: str  # why it failed, in one line
    reason: str
    nodeid: str
    images: dict[str, str]  # golden, candidate, diff, heatmap, score_map (URLs relative to index.html)
    display_width: int
    display_height: int
    pixelated: bool  # shown larger than rendered: keep pixels sharp
    metrics: tuple[Row, ...]
    budget: tuple[Row, ...]  # step time and peak memory against the checkpoint's limits
    extra_checks: dict[str, tuple[Row, ...]]  # other "*_checks" fields of the record
    regions: tuple[Region, ...]
    score_kind: str
    golden_made: tuple[tuple[str, str], ...]
    environment: tuple[tuple[str, str], ...]
    notes: tuple[str, ...]  # e.g. golden made with another torch version
    artifact_error: str = ""
    drift: tuple[Row, ...] = ()  # candidate vs golden, bf16 now vs golden, candidate vs bf16 now
    fingerprint: tuple[str, ...] = ()  # environment fields that differ from the golden's
    scorecard: tuple[Row, ...] = ()  # one row per dimension: what was measured, its limits
    scorecard_words: str = ""  # the scorecard as a sentence
    text: TextView | None = None  # the words OCR read in golden and candidate (expect_text)
    clip: ClipView | None = None  # a video case's sheet, player and per-frame curve


@dataclass(frozen=True)
class WordBox:
    """A word read by OCR and its box, in percentages of the image (drawn over it)."""

    text: str
    left: float
    top: float
    width_pct: float
    height_pct: float
    title: str  # the box in pixels and the engine's confidence


@dataclass(frozen=True)
class TextPanel:
    label: str  # "golden (bf16)", "candidate (float8_e4m3fn)"
    image: str
    reading: str  # the words read, in order ("nothing" when none)
    score: str  # its CER against the expected text, judged when it is the candidate's
    ok: bool | None
    words: tuple[WordBox, ...]


@dataclass(frozen=True)
class TextView:
    """The text check of one case: what was expected and what golden and candidate show."""

    expected: str
    region: tuple[float, float, float, float] | None  # percentages of the image, as the word boxes
    region_px: str
    panels: tuple[TextPanel, ...]
    display_width: int  # on-screen size of each image: large enough to read the words boxed on it
    display_height: int


@dataclass(frozen=True)
class CheckpointTable:
    id: str
    scheme: str
    rows: tuple[Row, ...]  # one per case and seed
    spread: tuple[Row, ...]  # one per case: its seeds together
    performance: tuple[Row, ...] = ()  # the scheme's candidate and the bf16 reference side by side
    first_of_checkpoint: bool = True  # the checkpoint's first scheme: its scheme comparison goes here
    live: bool = False  # judged against the bf16 render of the run (reference = "live"), not the golden


@dataclass(frozen=True)
class ReportView:
    created: str
    config: str
    total: int
    passed: int
    failed: int
    verdicts: tuple[tuple[str, int], ...]
    failing: tuple[CaseView, ...]
    tables: tuple[CheckpointTable, ...]
    cases: tuple[CaseView, ...]  # failing first
    seed_headers: tuple[str, ...] = ("Case", "Seed", "LPIPS", "SSIM", "PSNR",
                                     *(h for h, _, _ in _SCORE_COLUMNS), "Verdict")
    spread_headers: tuple[str, ...] = ("Case", "Seeds", "Seeds over a limit",
                                       *(f"{words.capitalize()}" for words in DIMENSIONS.values()),
                                       "LPIPS mean (worst)", "SSIM worst", "PSNR worst", "Worst seed")
    performance_headers: tuple[str, ...] = ("Pipeline", "Renders", "DiT weights", "Memory at render start",
                                            "Peak memory (worst)", "Step time (median)", "Seconds per image")
    extra: dict[str, Any] = field(default_factory=dict)


def build_view(document: Mapping[str, Any], artifacts: Mapping[str, dict[str, Any]] | None = None) -> ReportView:
    """``artifacts``: per test id, what ``regions.case_artifacts`` wrote (or {"error": ...})."""
    records = list(document.get("results", []))
    artifacts = artifacts or {}
    cases = [case_view(r, artifacts.get(r.get("id", ""), {})) for r in records]
    ordered = tuple(sorted(cases, key=lambda c: not c.failed))  # stable: config order within each group
    summary = document.get("summary", {})
    return ReportView(
        created=str(document.get("created", "")), config=str(document.get("config", "")),
        total=len(records), passed=sum(not c.failed for c in cases), failed=sum(c.failed for c in cases),
        verdicts=tuple(sorted(summary.get("verdicts", {}).items())),
        failing=tuple(c for c in ordered if c.failed), tables=_tables(records), cases=ordered,
    )


# ---- summary tables --------------------------------------------------------------------------

def _metric_cells(record: Mapping[str, Any]) -> list[Cell]:
    metrics = record.get("metrics") or {}
    checks = record.get("checks") or []
    cells = []
    for m in METRICS:
        mine = [c for c in checks if c.get("metric") == m]
        ok = all(c.get("passed") for c in mine) if mine else None
        title = "; ".join(f"{c.get('source')}: {_bound(c)}" for c in mine)
        cells.append(Cell(fmt_metric(m, metrics.get(_FIELD[m])), ok, title))
    return cells


def _score_cells(record: Mapping[str, Any]) -> list[Cell]:
    """The scorecard's headline numbers, judged by the record's checks on them (if any)."""
    values = _score_values(record)
    checks = [c for c in record.get("checks") or [] if isinstance(c, dict)]
    cells = []
    for _, key, decimals in _SCORE_COLUMNS:
        mine = [c for c in checks if _limit_value(c) == key]
        v = as_float(values.get(key))
        cells.append(Cell("–" if v is None else f"{v:.{decimals}f}", all(c.get("passed") for c in mine) if mine else None,
                          "; ".join(f"{c.get('source')}: {_bound(c)}" for c in mine)))
    return cells


def _score_values(record: Mapping[str, Any]) -> dict[str, Any]:
    """``Scorecard.values()`` from a record's serialized scorecard."""
    card = record.get("scorecard")
    if not isinstance(card, dict):
        return {}
    colour, sharp = card.get("colour") or {}, card.get("sharpness") or {}
    hue = as_float(colour.get("hue_shift_deg"))
    worst = lambda part: ((card.get(part) or {}).get("worst") or {}).get("value")  # noqa: E731
    return {"colour_delta_e_mean": colour.get("delta_e_mean"), "colour_delta_e_p95": colour.get("delta_e_p95"),
            "colour_hue_shift": None if hue is None else abs(hue), "sharpness": sharp.get("ratio"),
            "sharpness_worst": worst("sharpness"), "structure_worst": worst("structure"),
            "artifacts_worst": worst("artifacts"), "text_cer": (card.get("text") or {}).get("cer")}


def _limit_value(check: Mapping[str, Any]) -> str | None:
    limit = LIMITS_BY_KEY.get(str(check.get("key")))
    return None if limit is None else limit.value


def _anomalies(group: Sequence[Mapping[str, Any]]) -> list[Cell]:
    """Per reviewer's dimension (``DIMENSIONS``), the seeds with a failed check of it; "–" when
    no seed was judged on it (no limit on any of its numbers)."""
    cells = []
    for dimension in DIMENSIONS:
        judged = failed = 0
        for r in group:
            mine = [c for c in r.get("checks") or [] if isinstance(c, dict) and _dimension(c) == dimension]
            judged += bool(mine)
            failed += any(c.get("passed") is False for c in mine)
        cells.append(Cell(f"{failed} of {len(group)}" if judged else "–", (failed == 0) if judged else None,
                          "" if judged else "no limit on this dimension"))
    return cells


def _dimension(check: Mapping[str, Any]) -> str:
    """The dimension a check counts against; records written before the scorecard have none:
    their LPIPS/SSIM/PSNR checks are structure."""
    if check.get("dimension"):
        return str(check["dimension"])
    return next((limit.dimension for limit in LIMITS if limit.metric == check.get("metric")), "structure")


def _bound(check: Mapping[str, Any]) -> str:
    word = "min" if check.get("higher_is_better") else "max"
    return f"{word} {fmt_metric(str(check.get('metric')), check.get('limit'))}"


def _tables(records: Sequence[Mapping[str, Any]]) -> tuple[CheckpointTable, ...]:
    """One table per (checkpoint, scheme): each scheme's seeds and stability on their own."""
    by_scheme: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in records:
        by_scheme.setdefault((str(r.get("checkpoint")), str(r.get("scheme", ""))), []).append(r)
    tables = []
    seen: set[str] = set()
    for (checkpoint, scheme), rows in by_scheme.items():
        seed_rows = tuple(Row((Cell(str(r.get("case"))), Cell(str(r.get("seed"))), *_metric_cells(r),
                               *_score_cells(r), Cell(str(r.get("verdict")), not is_failure(r))),
                              anchor=_anchor(r), failed=is_failure(r)) for r in rows)
        by_case: dict[str, list[Mapping[str, Any]]] = {}
        for r in rows:
            by_case.setdefault(str(r.get("case")), []).append(r)
        spread = tuple(_spread_row(case, group) for case, group in by_case.items())
        tables.append(CheckpointTable(checkpoint, scheme, seed_rows, spread, _performance_rows(rows),
                                      first_of_checkpoint=checkpoint not in seen, live=any(map(is_live, rows))))
        seen.add(checkpoint)
    return tuple(tables)


def _values(group: Sequence[Mapping[str, Any]], field_name: str) -> list[tuple[float, Mapping[str, Any]]]:
    out = []
    for r in group:
        v = as_float((r.get("metrics") or {}).get(field_name))
        if v is not None and not math.isnan(v):
            out.append((v, r))
    return out


def _spread_row(case: str, group: Sequence[Mapping[str, Any]]) -> Row:
    failing = sum(is_failure(r) for r in group)
    lpips, ssim, psnr = _values(group, "lpips"), _values(group, "ssim"), _values(group, "psnr")
    worst = max(lpips, key=lambda t: t[0])[1] if lpips else None
    mean = (f"{fmt_metric('LPIPS', statistics.fmean(v for v, _ in lpips))} "
            f"({fmt_metric('LPIPS', max(v for v, _ in lpips))})") if lpips else "–"
    return Row((
        Cell(case), Cell(str(len(group))), Cell(f"{failing} of {len(group)}", failing == 0), *_anomalies(group),
        Cell(mean),
        Cell(fmt_metric("SSIM", min(v for v, _ in ssim)) if ssim else "–"),
        Cell(fmt_metric("PSNR", min(v for v, _ in psnr)) if psnr else "–"),
        Cell(f"s{worst.get('seed')}" if worst else "–"),
    ), anchor=_anchor(worst) if worst else "", failed=failing > 0)


def _anchor(record: Mapping[str, Any]) -> str:
    return f"case-{record.get('id', '')}"


# ---- one case --------------------------------------------------------------------------------

def case_view(record: Mapping[str, Any], artifacts: Mapping[str, Any]) -> CaseView:
    render = record.get("render") or {}
    width, height = int(render.get("width") or 256), int(render.get("height") or 256)
    scale = max(1, 384 // max(width, 1))  # small renders are shown enlarged (pixelated)
    display_w = min(width * scale, 512)
    images = {k: _url(v) for k, v in (record.get("images") or {}).items()}
    for key in ("heatmap", "score_map"):
        if key in artifacts:
            images[key] = _url(str(Path(record["images"]["candidate"]).parent / artifacts[key]))
    return CaseView(
        anchor=_anchor(record), id=str(record.get("id")), checkpoint=str(record.get("checkpoint")),
        case=str(record.get("case")), seed=int(record.get("seed", 0)), prompt=str(record.get("prompt", "")),
        scheme=str(record.get("scheme", "")), verdict=str(record.get("verdict")), failed=is_failure(record),
        headline=headline(record), reason=str(record.get("reason") or ""), nodeid=str(record.get("nodeid", "")),
        images=images,
        display_width=display_w, display_height=round(display_w * height / max(width, 1)),
        pixelated=width <= 256,
        metrics=tuple(_check_row(c) for c in record.get("checks") or []),
        budget=_budget_rows(record), extra_checks=_extra_checks(record),
        regions=_regions(record, artifacts), score_kind=str(artifacts.get("score_kind", "")),
        golden_made=_golden_made(record.get("golden")),
        environment=tuple((k, str(v)) for k, v in (record.get("environment") or {}).items()
                          if k in _ENV_KEYS),
        notes=_notes(record), artifact_error=str(artifacts.get("error", "")),
        drift=_drift_rows(record.get("drift")), fingerprint=_fingerprint(record.get("fingerprint")),
        scorecard=_scorecard_rows(record), scorecard_words=str((record.get("scorecard") or {}).get("words") or ""),
        text=_text_view(record, images, width, height),
        clip=clip_view(record, images, width, height),
    )


_SCORE_ROWS = (  # (dimension, label, Scorecard.values() key)
    ("colour", "ΔE mean (CIEDE2000)", "colour_delta_e_mean"), ("colour", "ΔE p95", "colour_delta_e_p95"),
    ("colour", "hue shift of saturated pixels", "colour_hue_shift"),
    ("sharpness", "sharpness (candidate / golden detail)", "sharpness"),
    ("sharpness", "sharpness, worst region", "sharpness_worst"),
    ("structure", "SSIM, worst region", "structure_worst"), ("artifacts", "worst LPIPS region", "artifacts_worst"),
    ("text", "text CER (candidate vs expected)", "text_cer"),
)


def _scorecard_rows(record: Mapping[str, Any]) -> tuple[Row, ...]:
    """The scorecard per dimension: the number, its limits (threshold and expected) and whether
    they hold; the meaning check as words."""
    card = record.get("scorecard")
    if not isinstance(card, dict):
        return ()
    values = _score_values(record)
    checks = [c for c in record.get("checks") or [] if isinstance(c, dict)]
    colour = card.get("colour") or {}
    rows = []
    for dimension, label, key in _SCORE_ROWS:
        v = as_float(values.get(key))
        if v is None:
            continue
        text = f"{v:.1f}°" if key == "colour_hue_shift" else (f"{v:.4f}" if key == "artifacts_worst" else f"{v:.2f}")
        if key == "colour_hue_shift" and colour.get("towards"):
            text = f"{as_float(colour.get('hue_shift_deg')):+.1f}° towards {colour.get('towards')} {colour.get('where')}"
        elif key == "sharpness":
            text += f" ({(card.get('sharpness') or {}).get('words', '')})"
        mine = [c for c in checks if _limit_value(c) == key]
        ok = all(c.get("passed") for c in mine) if mine else None
        limit = "; ".join(f"{_bound(c)} ({c.get('source')})" for c in mine) or "no limit"
        rows.append(Row((Cell(dimension), Cell(label), Cell(text), Cell(limit),
                         Cell("–" if ok is None else ("ok" if ok else "FAIL"), ok)), failed=ok is False))
    meaning = card.get("meaning")
    if isinstance(meaning, dict):
        agrees = bool(meaning.get("agrees"))
        cand, gold = meaning.get("candidate") or {}, meaning.get("golden") or {}
        rows.append(Row((Cell("meaning"), Cell(f"{meaning.get('scorer')} read-back"),
                         Cell(f"candidate {cand.get('detail')}; golden {gold.get('detail')}"),
                         Cell("kept"), Cell("ok" if agrees else "LOST", agrees)), failed=not agrees))
    return tuple(rows)


TEXT_DISPLAY = 480  # px: the text check's images are shown at least this wide (small renders enlarged), at most twice


def _text_view(record: Mapping[str, Any], images: Mapping[str, str], width: int, height: int) -> TextView | None:
    """Golden and candidate side by side with the words read in each boxed; None without a text check."""
    text = (record.get("scorecard") or {}).get("text")
    if not isinstance(text, dict):
        return None
    checks = [c for c in record.get("checks") or [] if isinstance(c, dict) and _limit_value(c) == "text_cer"]
    ok = all(c.get("passed") for c in checks) if checks else None
    limit = "; ".join(f"{_bound(c)} ({c.get('source')})" for c in checks) or "no limit"
    panels = []
    for key, label, cer, judged in (("golden", "golden (bf16)", text.get("golden_cer"), None),
                                    ("candidate", f"candidate ({record.get('scheme', '')})", text.get("cer"), ok)):
        reading = text.get(key) or {}
        words = [w for w in reading.get("words") or [] if isinstance(w, dict)]
        score = f"CER {as_float(cer):.2f}" if as_float(cer) is not None else "CER –"
        panels.append(TextPanel(
            label=label, image=images.get(key, ""), reading=f"“{reading.get('text')}”" if words else "nothing",
            score=score + (f", {limit}" if key == "candidate" else ""), ok=judged,
            words=tuple(WordBox(str(w.get("text")), *_pct((w["x"], w["y"], w["w"], w["h"]), width, height),
                                title=f"{w.get('text')}: x {w['x']}, y {w['y']}, {w['w']}×{w['h']} px, "
                                      f"confidence {as_float(w.get('confidence')) or 0:.0f}") for w in words)))
    region = text.get("region")
    return TextView(expected=", ".join(f"“{w}”" for w in text.get("expected") or []),
                    region=_pct(region, width, height) if region else None,
                    region_px=f"region x {region[0]}, y {region[1]}, {region[2]}×{region[3]} px" if region else "",
                    panels=tuple(panels), display_width=(shown := min(max(width, TEXT_DISPLAY), 2 * TEXT_DISPLAY)),
                    display_height=round(shown * height / max(width, 1)))


def _pct(box: Sequence[int], width: int, height: int) -> tuple[float, float, float, float]:
    x, y, w, h = box
    return 100 * x / width, 100 * y / height, 100 * w / width, 100 * h / height


def _drift_rows(drift: Any) -> tuple[Row, ...]:
    """The three comparisons of the drift check side by side, each with its verdict."""
    if not isinstance(drift, dict):
        return ()
    rows = []
    for key in ("candidate_vs_golden", "reference_vs_golden", "candidate_vs_reference"):
        comparison = drift.get(key)
        if not isinstance(comparison, dict):
            continue
        metrics = comparison.get("metrics") or {}
        failed = [c for c in comparison.get("checks") or [] if isinstance(c, dict) and not c.get("passed")]
        passed = bool(comparison.get("passed"))
        verdict = "ok" if passed else "FAIL: " + "; ".join(f"{c.get('metric')} {_bound(c)} ({c.get('source')})"
                                                          for c in failed)
        rows.append(Row((Cell(str(comparison.get("name"))),
                         *(Cell(fmt_metric(m, metrics.get(_FIELD[m]))) for m in METRICS),
                         Cell(verdict, passed)), failed=not passed))
    return tuple(rows)


def _fingerprint(differences: Any) -> tuple[str, ...]:
    if not isinstance(differences, list):
        return ()
    return tuple(f"{d.get('field')}: {d.get('recorded')} → {d.get('current')}" for d in differences
                 if isinstance(d, dict))


def _url(path: str) -> str:
    """A report-relative path as-is; an absolute one as a file URI."""
    from urllib.parse import quote

    p = Path(path)
    return p.as_uri() if p.is_absolute() else quote(path)


def _check_row(check: Mapping[str, Any]) -> Row:
    metric = str(check.get("metric"))
    op = "≥" if check.get("higher_is_better") else "≤"
    return Row((Cell(metric), Cell(fmt_metric(metric, check.get("value"))),
                Cell(f"{op} {fmt_metric(metric, check.get('limit'))}"), Cell(str(check.get("source"))),
                Cell("ok" if check.get("passed") else "FAIL", bool(check.get("passed")))),
               failed=not check.get("passed"))


def _performance_rows(records: Sequence[Mapping[str, Any]]) -> tuple[Row, ...]:
    """The source article's performance table for one checkpoint: each pipeline that rendered
    in this run (the bf16 reference only renders with --update-golden), over all its renders."""
    rows = []
    scheme = str(records[0].get("scheme", "candidate")) if records else "candidate"
    for label, key in ((f"{scheme} candidate", "candidate_render"), ("bf16 reference", "reference_render")):
        summaries = [r[key] for r in records if isinstance(r.get(key), dict)]
        if not summaries:
            continue
        steps = [t for s in summaries for t in (as_float(x) for x in s.get("step_times_s") or []) if t is not None]
        totals = [t for t in (as_float(s.get("total_s")) for s in summaries) if t is not None]
        memories = [s.get("memory") or {} for s in summaries]
        peaks = [p for p in (as_float(m.get("peak_bytes")) for m in memories) if p is not None]
        starts = [p for p in (as_float(m.get("at_start_bytes")) for m in memories) if p is not None]
        weights = [w for w in (as_float(s.get("dit_weight_bytes")) for s in summaries) if w is not None]
        kind = "VRAM" if memories and memories[0].get("kind") == "cuda" else "RSS"
        rows.append(Row((
            Cell(label), Cell(str(len(summaries))),
            Cell(format_bytes(max(weights)) if weights else "–"),
            Cell(format_bytes(max(starts)) if starts else "–"),
            Cell(f"{format_bytes(max(peaks))} ({kind})" if peaks else "–"),
            Cell(format_seconds(statistics.median(steps)) if steps else "–"),
            Cell(format_seconds(statistics.fmean(totals)) if totals else "–"),
        )))
    return tuple(rows)


def _budget_rows(record: Mapping[str, Any]) -> tuple[Row, ...]:
    """Measured step times and memory, each against its budget check when the record has one,
    else against the checkpoint's configured limit (median step time, CUDA peak)."""
    checks = [c for c in record.get("budget_checks") or [] if isinstance(c, dict)]
    used: list[Mapping[str, Any]] = []
    limits = record.get("limits") or {}
    rows = []
    for label, key in (("candidate", "candidate_render"), ("reference (bf16)", "reference_render")):
        summary = record.get(key)
        if not summary:
            continue
        candidate = key == "candidate_render"
        steps = [t for t in (as_float(s) for s in summary.get("step_times_s") or []) if t is not None]
        if steps:
            median = statistics.median(steps)
            text = (f"{format_seconds(median)} median · {format_seconds(max(steps))} max · {len(steps)} steps "
                    f"· {format_seconds(as_float(summary.get('total_s')) or 0)} total")
            check = _take(checks, used, lambda name: name.startswith("step time")) if candidate else None
            limit = as_float(limits.get("step_time_s")) if candidate else None
            rows.append(_measured(f"step time, {label}", text, check, limit, median, format_seconds, "median"))
        memory = summary.get("memory") or {}
        peak = as_float(memory.get("peak_bytes"))
        what = "peak VRAM" if memory.get("kind") == "cuda" else "peak RSS"
        # the check names what its limit counts on CUDA: "peak VRAM (device used)"
        check = _take(checks, used, lambda name: name == what or name.startswith(what + " (")) if candidate else None
        limit = as_float(limits.get("peak_memory_bytes")) if candidate else None
        shown = format_bytes(peak) if peak is not None else (memory.get("note") or "not measured")
        if check is not None and check.get("name") != what:  # the counted figure, then the tensors' own
            shown = f"{_unit_text(check, 'value')} ({str(check.get('name'))[len(what) + 2:-1]}); allocated {shown}"
        rows.append(_measured(f"{what}, {label}", shown,
                              check, limit, peak, format_bytes, ""))
        resident = as_float(memory.get("at_start_bytes"))
        what = "resident VRAM" if memory.get("kind") == "cuda" else "resident RSS"
        check = _take(checks, used, lambda name: name == what) if candidate else None
        limit = as_float(limits.get("resident_memory_bytes")) if candidate else None
        if resident is not None and (check is not None or limit is not None or memory.get("kind") == "cuda"):
            rows.append(_measured(f"{what} at render start, {label}", format_bytes(resident), check, limit,
                                  resident, format_bytes, ""))
        weights = as_float(summary.get("dit_weight_bytes"))
        if weights is not None:
            rows.append(Row((Cell(f"DiT weights as stored, {label}"), Cell(format_bytes(weights)), Cell(""), Cell(""))))
    plan = record.get("memory_plan")
    if isinstance(plan, dict):
        rows.append(Row((Cell("memory plan"), Cell(_plan_text(plan)), Cell(_vram_limit_text(plan)), Cell(""))))
    for check in checks:  # budget checks that match no measured row
        if check not in used:
            rows.append(_measured(str(check.get("name")), _unit_text(check, "value"), check, None, None, str, ""))
    return tuple(rows)


def _plan_text(plan: Mapping[str, Any]) -> str:
    """"cpu-offload on cuda: dit cpu/float8_e4m3fn, ..." from a serialized ``MemoryPlan``."""
    components = plan.get("components") or {}
    homes = ", ".join(f"{name} in {p.get('home_device')} ({p.get('home_dtype')})"
                      for name, p in components.items() if isinstance(p, dict))
    return f"{plan.get('mode')} on {plan.get('device')}: {homes}"


def _vram_limit_text(plan: Mapping[str, Any]) -> str:
    limit = as_float(plan.get("vram_limit_bytes"))
    return "no vram_limit" if limit is None else f"vram_limit {format_bytes(limit)}"


def _take(checks: list[dict[str, Any]], used: list[Mapping[str, Any]], match: Any) -> dict[str, Any] | None:
    for check in checks:
        if check not in used and match(str(check.get("name", ""))):
            used.append(check)
            return check
    return None


def _measured(what: str, text: str, check: Mapping[str, Any] | None, limit: float | None, value: float | None,
              fmt: Any, statistic: str) -> Row:
    if check is not None:
        ok: bool | None = bool(check.get("passed"))
        limit_text = f"{check.get('name')} ≤ {_unit_text(check, 'limit')}"
    elif limit is not None and value is not None:
        ok = value <= limit
        limit_text = f"≤ {fmt(limit)}" + (f" ({statistic})" if statistic else "")
    else:
        ok, limit_text = None, "no limit"
    return Row((Cell(what), Cell(text), Cell(limit_text), Cell("–" if ok is None else ("ok" if ok else "FAIL"), ok)),
               failed=ok is False)


def _unit_text(check: Mapping[str, Any], key: str) -> str:
    value = as_float(check.get(key))
    if value is None:
        return str(check.get(key))
    unit = check.get("unit")
    return format_bytes(value) if unit == "bytes" else (format_seconds(value) if unit == "s" else f"{value:g}")


def _extra_checks(record: Mapping[str, Any]) -> dict[str, tuple[Row, ...]]:
    """Other ``*_checks`` lists shown generically, one row per check (budget checks are part
    of the measured table)."""
    out = {}
    for key, value in record.items():
        if key.endswith("_checks") and key not in ("checks", "budget_checks") and isinstance(value, list) and value:
            rows = []
            for check in value:
                items = check.items() if isinstance(check, dict) else [("value", check)]
                passed = check.get("passed") if isinstance(check, dict) else None
                rows.append(Row(tuple(Cell(f"{k}: {v}") for k, v in items if k != "passed")
                                + (Cell("–" if passed is None else ("ok" if passed else "FAIL"),
                                        None if passed is None else bool(passed)),), failed=passed is False))
            out[key.replace("_", " ")] = tuple(rows)
    return out


def _regions(record: Mapping[str, Any], artifacts: Mapping[str, Any]) -> tuple[Region, ...]:
    width, height = artifacts.get("width"), artifacts.get("height")
    if not width or not height:
        return ()
    folder = Path(record["images"]["candidate"]).parent
    out = []
    for r in artifacts.get("regions", []):
        out.append(Region(
            index=r["index"], left=100 * r["x"] / width, top=100 * r["y"] / height,
            width_pct=100 * r["size"] / width, height_pct=100 * r["size"] / height,
            label=f"region {r['index']}: x {r['x']}, y {r['y']}, {r['size']}×{r['size']} px, "
                  f"mean {artifacts.get('score_kind', '')} {r['score']:.4f}, {r['zoom']}× zoom",
            golden=_url(str(folder / r["golden"])), candidate=_url(str(folder / r["candidate"])),
            display=max(r["size"] * r["zoom"], 160)))
    return tuple(out)


def _golden_made(sidecar: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(sidecar, dict):
        return (("sidecar", "not found"),)
    env = sidecar.get("environment") or {}
    rows = [("created", str(env.get("created", "?")))]
    rows += [(k, str(env[k])) for k in _ENV_KEYS if k in env]
    rows += [(k, str(sidecar[k])) for k in ("steps", "width", "height", "guidance", "scheduler")
             if k in sidecar]
    rows += [(f"sha256 {k}", str(v)[:16] + "…") for k, v in (sidecar.get("checkpoint_hashes") or {}).items()]
    return tuple(rows)


def is_live(record: Mapping[str, Any]) -> bool:
    """Judged against the bf16 render of its own run (``reference = "live"``)."""
    drift = record.get("drift")
    return isinstance(drift, Mapping) and drift.get("mode") == "live"


LIVE_NOTE = ("reference = live: judged against the bf16 render of this run, not the golden. Damage to a component "
             "both pipelines share (the VAE, a text encoder) is in both renders and cannot fail this comparison; "
             "the drift check's candidate vs golden still shows it.")


def _notes(record: Mapping[str, Any]) -> tuple[str, ...]:
    golden_env = ((record.get("golden") or {}).get("environment")) or {}
    env = record.get("environment") or {}
    notes = [LIVE_NOTE] if is_live(record) else []
    for key in ("device", "torch", "diffsynth"):
        if key in golden_env and key in env and golden_env[key] != env[key]:
            notes.append(f"golden made with {key} {golden_env[key]}, this run used {env[key]}")
    return tuple(notes)
