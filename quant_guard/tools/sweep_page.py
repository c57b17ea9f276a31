"""The sensitivity sweep's HTML page, ``sweep.html`` beside ``sweep.json``: the recommendation
with its confirming metrics and bytes, one bar pair per group (inline SVG: the deciding metric
kept in bf16 and quantized alone, against the fully quantized value and the target), the ranked
table, and the worst case's golden against the candidate before and after.

Rendered from the sweep.json document (like the report from results.json) with the report's
Jinja2 environment (autoescape) and stylesheet; no network, images are files of the folder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PAGE_NAME = "sweep.html"
# The bar chart's geometry (px): label column, bar area, row height.
_LABEL_W, _BARS_W, _ROW_H, _TOP, _BOTTOM = 170, 520, 30, 26, 34
_METRIC_KEY = {"LPIPS": "lpips", "SSIM": "ssim", "PSNR": "psnr"}
_TARGET_KEY = {"LPIPS": "lpips_max", "SSIM": "ssim_min", "PSNR": "psnr_min"}


def write_sweep_page(folder: Path, document: Mapping[str, Any]) -> Path:
    from quant_guard.store.atomic import atomic_write
    from quant_guard.report.html import templates

    path = folder / PAGE_NAME
    html = templates().get_template("sweep.html.j2").render(view=sweep_view(document))
    atomic_write(path, html.encode("utf-8"))
    return path


def sweep_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    from quant_guard.tools.sweep_text import describe_targets, python_tuple, toml_entry
    from quant_guard.config.thresholds import Thresholds
    from quant_guard.config.units import format_bytes

    rec = doc["recommendation"]
    full = doc["full"]
    confirm = rec["confirm"]
    images = doc["images"]
    worst = doc["worst_case"]
    panels = [{"src": images["golden"], "title": "bf16 golden", "caption": worst}]
    panels.append({"src": images["before"], "title": "fully quantized (before)",
                   "caption": _case_metrics(full, worst)})
    if "after" in images and confirm:
        panels.append({"src": images["after"], "title": "recommended mixed scheme (after)",
                       "caption": _case_metrics(confirm, worst)})
    return {
        "checkpoint": doc["checkpoint"], "scheme": doc["scheme"]["id"], "granularity": doc["granularity"],
        "cases": [c["case"] for c in doc["cases"]], "seconds": doc["seconds"],
        "target": describe_targets({c["case"]: Thresholds(**c["target"]) for c in doc["cases"]}),
        "answer": rec["answer"], "note": rec["note"], "groups_kept": rec["groups"],
        "extra": format_bytes(rec["extra_bytes"]),
        "runs": [_variant_row("fully quantized", full), *(_variant_row(s["label"], s) for s in rec["steps"]),
                 *([_variant_row("recommended mixed scheme (confirming run)", confirm)] if confirm else [])],
        "entry": toml_entry(rec["entry"]) if rec["entry"] else None,
        "exclude": json.dumps(rec["exclude_modules"], indent=1) if rec["exclude_modules"] else None,
        "skip": python_tuple(rec["skip_modules_pattern"]) if rec["skip_modules_pattern"] else None,
        "chart": _chart(doc),
        "rows": [_group_row(g, set(rec["groups"])) for g in doc["groups"]],
        "panels": panels, "worst_case": worst,
    }


def _case_metrics(variant: Mapping[str, Any], case: str) -> str:
    c = next(c for c in variant["cases"] if c["case"] == case)
    return f"LPIPS {c['lpips']:.4f} · SSIM {c['ssim']:.4f} · PSNR {_float(c['psnr']):.2f} dB"


def _variant_row(label: str, v: Mapping[str, Any]) -> dict[str, Any]:
    from quant_guard.config.units import format_bytes

    w = v["worst"]
    return {"label": label, "lpips": f"{w['lpips']:.4f}", "ssim": f"{w['ssim']:.4f}",
            "psnr": f"{_float(w['psnr']):.2f}", "bytes": format_bytes(v["stored_bytes"]), "meets": v["meets"],
            "failing": v["failing"], "cases": len(v["cases"])}


def _group_row(g: Mapping[str, Any], kept: set[str]) -> dict[str, Any]:
    from quant_guard.config.units import format_bytes

    k, a = g["kept"]["worst"], g["alone"]["worst"]
    return {"rank": g["rank"], "name": g["name"], "kind": g["kind"], "layers": len(g["layers"]),
            "bf16": format_bytes(g["bf16_bytes"]), "quantized": format_bytes(g["quantized_bytes"]),
            "extra": format_bytes(g["extra_bytes"]), "recommended": g["name"] in kept,
            "kept": f"{k['lpips']:.4f} / {k['ssim']:.4f} / {_float(k['psnr']):.2f}", "kept_meets": g["kept"]["meets"],
            "alone": f"{a['lpips']:.4f} / {a['ssim']:.4f} / {_float(a['psnr']):.2f}",
            "alone_meets": g["alone"]["meets"]}


def _float(value: float | str) -> float:
    return float(value)  # "inf" / "-inf" as written to JSON


def _chart(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Bars of the deciding metric's worst value per group: kept in bf16 and quantized alone; the
    target line where every case has the same limit on it."""
    metric = doc["deciding_metric"]
    key = _METRIC_KEY[metric]
    limits = {c["target"][_TARGET_KEY[metric]] for c in doc["cases"]}
    higher_better = metric != "LPIPS"
    full_value = _float(doc["full"]["worst"][key])
    values = [_float(g[which]["worst"][key]) for g in doc["groups"] for which in ("kept", "alone")]
    limit = next(iter(limits)) if len(limits) == 1 else None
    finite = [v for v in [*values, full_value, *([limit] if limit is not None else [])] if math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    pad = (hi - lo) * 0.08 or max(abs(hi) * 0.05, 1e-4)
    lo, hi = lo - pad, hi + pad
    if metric == "LPIPS":
        lo = max(lo, 0.0)
    if metric == "SSIM":
        hi = min(hi, 1.0)

    def x(value: float) -> float:
        value = hi if value == math.inf else lo if value == -math.inf else value
        return round(_LABEL_W + (min(max(value, lo), hi) - lo) / (hi - lo) * _BARS_W, 1)

    rows = []
    for i, g in enumerate(doc["groups"]):
        y = _TOP + i * _ROW_H
        bars = []
        for j, which in enumerate(("kept", "alone")):
            value = _float(g[which]["worst"][key])
            bars.append({"class": which, "y": y + 3 + j * 12, "w": round(x(value) - _LABEL_W, 1),
                         "label_x": x(value) + 4, "text": _fmt(metric, value)})
        rows.append({"name": g["name"], "y": y + _ROW_H / 2 + 4, "bars": bars})
    bottom = _TOP + len(rows) * _ROW_H
    ticks = [{"x": x(lo + (hi - lo) * t / 4), "text": _fmt(metric, lo + (hi - lo) * t / 4)} for t in range(5)]
    return {"metric": metric, "direction": "higher is better" if higher_better else "lower is better",
            "width": _LABEL_W + _BARS_W + 70, "height": bottom + _BOTTOM, "label_x": _LABEL_W - 8,
            "left": _LABEL_W, "right": _LABEL_W + _BARS_W, "top": _TOP - 8, "bottom": bottom, "rows": rows,
            "ticks": ticks, "tick_y": bottom + 14,
            "full": {"x": x(full_value), "text": f"fully quantized {_fmt(metric, full_value)}"},
            "target": {"x": x(limit), "text": f"target {_fmt(metric, limit)}"} if limit is not None else None}


def _fmt(metric: str, value: float) -> str:
    if not math.isfinite(value):
        return "identical" if (value > 0) == (metric != "LPIPS") else "-"
    return f"{value:.2f} dB" if metric == "PSNR" else f"{value:.4f}"
