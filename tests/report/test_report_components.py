"""The scheme comparison when schemes quantize more than the DiT (issue 29): which components each
scheme quantizes, what each stores and saves against bf16, every component together in the
ranking and the plot; a project whose schemes all quantize the DiT alone keeps its one column."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from scheme_support import BF16_COMPONENTS, T5, component_matrix, component_record

from quant_guard.config.units import format_bytes
from quant_guard.report.html import render_index
from quant_guard.report.scheme_plot import X_LABEL, X_LABEL_ALL, scheme_plot_svg
from quant_guard.report.scheme_table import SchemeSummary, compare_schemes
from quant_guard.report.schemes_view import HEADERS, TERMINAL_HEADERS, scheme_comparisons, terminal_lines

SVG = "{http://www.w3.org/2000/svg}"
COMPONENT_HEADERS = ("Quantizes", "dit stored (saved)", f"{T5} stored (saved)", "All weights stored (saved)")


def by_name(records: list[dict[str, Any]]) -> dict[str, SchemeSummary]:
    (summaries,) = compare_schemes(records).values()
    return {s.scheme: s for s in summaries}


def table(records: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """The report's table: scheme -> header -> cell text."""
    (comparison,) = scheme_comparisons(records).values()
    return {row.cells[0].text: {h: c.text for h, c in zip(comparison.headers, row.cells)} for row in comparison.rows}


def test_each_scheme_says_what_each_component_stores_and_saves() -> None:
    s = by_name(component_matrix())
    assert (s["dit-only"].targets, s["t5-only"].targets, s["both"].targets) == (("dit",), (T5,), ("dit", T5))
    assert dict(s["both"].bf16_bytes) == BF16_COMPONENTS  # each read off a scheme that leaves it alone
    dit_saved, t5_saved = BF16_COMPONENTS["dit"] // 2, BF16_COMPONENTS[T5] // 2
    assert (s["dit-only"].saved("dit"), s["dit-only"].saved(T5)) == (dit_saved, 0)
    assert (s["t5-only"].saved("dit"), s["t5-only"].saved(T5)) == (0, t5_saved)
    assert (s["both"].saved("dit"), s["both"].saved(T5), s["both"].total_saved) == (dit_saved, t5_saved,
                                                                                   dit_saved + t5_saved)
    assert s["both"].total_bytes == sum(BF16_COMPONENTS.values()) - dit_saved - t5_saved
    assert s["t5-only"].stored("vae") == BF16_COMPONENTS["vae"] and s["t5-only"].saved("vae") == 0


def test_the_ranking_weighs_every_component_when_a_scheme_quantizes_more_than_the_dit() -> None:
    """By DiT bytes alone T5-only would look as big as bf16 and "both" no smaller than DiT-only."""
    summaries = compare_schemes(component_matrix())["tiny"]
    assert [(x.scheme, x.rank, x.beaten_by) for x in summaries] == [
        ("both", "front", ""), ("dit-only", "front", ""), ("t5-only", "dominated", "dit-only")]
    assert all(x.by_component and x.size_bytes == x.total_bytes for x in summaries)


def test_the_table_has_a_column_per_quantized_component_and_one_for_all() -> None:
    (comparison,) = scheme_comparisons(component_matrix()).values()
    assert comparison.headers == HEADERS[:6] + COMPONENT_HEADERS + HEADERS[7:]  # "Stored DiT" replaced
    assert "text_encoder_clip stored (saved)" not in comparison.headers  # no scheme quantizes it
    rows = table(component_matrix())
    assert list(rows) == ["both", "dit-only", "t5-only"]
    dit, t5 = BF16_COMPONENTS["dit"], BF16_COMPONENTS[T5]
    assert rows["dit-only"]["Quantizes"] == "dit" and rows["both"]["Quantizes"] == f"dit, {T5}"
    assert rows["dit-only"]["dit stored (saved)"] == f"{format_bytes(dit // 2)} (−{format_bytes(dit // 2)})"
    assert rows["dit-only"][f"{T5} stored (saved)"] == f"{format_bytes(t5)} (0 B)"
    assert rows["t5-only"]["dit stored (saved)"] == f"{format_bytes(dit)} (0 B)"
    assert rows["t5-only"][f"{T5} stored (saved)"] == f"{format_bytes(t5 // 2)} (−{format_bytes(t5 // 2)})"
    total = sum(BF16_COMPONENTS.values())
    saved = dit // 2 + t5 // 2
    assert rows["both"]["All weights stored (saved)"] == f"{format_bytes(total - saved)} (−{format_bytes(saved)})"
    assert rows["both"]["dit stored (saved)"] == rows["dit-only"]["dit stored (saved)"]
    assert rows["both"][f"{T5} stored (saved)"] == rows["t5-only"][f"{T5} stored (saved)"]
    html = render_index({"results": component_matrix()})
    assert all(f"<th>{h}</th>" in html for h in COMPONENT_HEADERS) and "weigh every component" in html


def test_the_terminal_table_has_the_same_columns() -> None:
    lines = terminal_lines(component_matrix())
    assert "stored bytes of every component" in lines[0]
    header, *rows = lines[1:]
    for name in ("quantizes", "dit stored (saved)", f"{T5} stored (saved)", "all stored (saved)"):
        assert name in header
    assert "DiT stored" not in header and [r.split()[0] for r in rows] == ["both", "dit-only", "t5-only"]
    t5 = BF16_COMPONENTS[T5]
    assert f"{format_bytes(t5 // 2)} (−{format_bytes(t5 // 2)})" in rows[2] and f"dit, {T5}" in rows[0]


def test_a_dit_only_project_keeps_its_one_stored_dit_column() -> None:
    """Renders record every component's bytes; no scheme quantizing anything but the DiT: no clutter."""
    records = [component_record("float8", 0, 0.002, quantized={"dit": 1_000}),
               component_record("nf4", 0, 0.004, quantized={"dit": 500})]
    (comparison,) = scheme_comparisons(records).values()
    assert comparison.headers == HEADERS and "weigh every component" not in comparison.caption
    assert [h for h in re.split(r"\s{2,}", terminal_lines(records)[1].strip())] == list(TERMINAL_HEADERS)
    assert table(records)["nf4"]["Stored DiT"] == "500 B"
    assert f">{X_LABEL}<" in comparison.svg
    assert [s.size_bytes for s in compare_schemes(records)["tiny"]] == [500, 1_000]  # the DiT's, as before


def test_bf16_sizes_come_from_the_reference_render_when_every_scheme_quantizes_a_component() -> None:
    records = [component_record("t5-only", 0, 0.002, quantized={T5: 100}),
               component_record("both", 0, 0.003, quantized={"dit": 1_000, T5: 100})]
    assert table(records)["both"][f"{T5} stored (saved)"] == "100 B (–)"  # nothing shows T5's bf16 size
    records[0]["reference_render"] = {"component_weight_bytes": dict(BF16_COMPONENTS)}
    t5 = BF16_COMPONENTS[T5]
    assert table(records)["both"][f"{T5} stored (saved)"] == f"100 B (−{format_bytes(t5 - 100)})"


def test_a_component_offloaded_at_render_start_says_what_was_on_the_device() -> None:
    """Resident renders (every weight on the device) keep the cells as they were; under cpu_offload
    the cell of a component with less on the device than it stores says how much, and so does the
    plot's tooltip, in the table's per-component columns and for all weights together."""
    records = component_matrix()
    for r in records:
        stored = r["candidate_render"]["component_weight_bytes"]
        offloaded = r["scheme"] == "t5-only"  # its DiT and T5 in host memory as the loop began
        r["candidate_render"]["component_resident_bytes"] = {
            name: 0 if offloaded and name in ("dit", T5) else size for name, size in stored.items()}
    rows, plain = table(records), table(component_matrix())
    assert rows["both"] == plain["both"] and rows["dit-only"] == plain["dit-only"]
    t5, dit = BF16_COMPONENTS[T5], BF16_COMPONENTS["dit"]
    assert rows["t5-only"][f"{T5} stored (saved)"] == f"{format_bytes(t5 // 2)} (−{format_bytes(t5 // 2)}), 0 B on device"
    assert rows["t5-only"]["dit stored (saved)"] == f"{format_bytes(dit)} (0 B), 0 B on device"
    on_device = BF16_COMPONENTS["text_encoder_clip"] + BF16_COMPONENTS["vae"]
    assert rows["t5-only"]["All weights stored (saved)"].endswith(f"), {format_bytes(on_device)} on device")
    assert by_name(records)["t5-only"].resident("vae") == BF16_COMPONENTS["vae"]
    root = ET.fromstring(scheme_plot_svg(compare_schemes(records)["tiny"]))
    titles = {g.get("data-scheme"): str(g.find(f"{SVG}title").text)  # type: ignore[union-attr]
              for g in root.iter(f"{SVG}g") if "point" in g.get("class", "")}
    assert f"bytes on device at render start: dit 0, text_encoder_clip {BF16_COMPONENTS['text_encoder_clip']}" \
        in titles["t5-only"] and "on device" not in titles["both"]


def test_the_plot_weighs_every_component_and_says_what_each_point_quantizes() -> None:
    summaries = compare_schemes(component_matrix())["tiny"]
    root = ET.fromstring(scheme_plot_svg(summaries))
    assert any(t.text == X_LABEL_ALL for t in root.iter(f"{SVG}text"))
    x = {g.get("data-scheme"): float(g.find(f"{SVG}circle").get("cx"))  # type: ignore[union-attr]
         for g in root.iter(f"{SVG}g") if "point" in g.get("class", "")}
    assert x["both"] < x["dit-only"] < x["t5-only"]  # by every component's stored bytes
    titles = {g.get("data-scheme"): g.find(f"{SVG}title").text for g in root.iter(f"{SVG}g")  # type: ignore[union-attr]
              if "point" in g.get("class", "")}
    t5_saved = BF16_COMPONENTS[T5] // 2
    assert f"quantizes {T5}; bytes saved: {T5} {t5_saved}" in str(titles["t5-only"])


# ---- the scheme matrix through the real gate -------------------------------------------------

MATRIX = '''schemes = [
    { id = "dit-float8", storage = "float8_e4m3fn" },
    { id = "t5-float8", components = { text_encoder_t5 = "float8_e4m3fn" } },
    { id = "dit-t5-float8", components = { dit = "float8_e4m3fn", text_encoder_t5 = "float8_e4m3fn" } },
]'''


def test_a_real_run_compares_dit_only_text_encoder_only_and_both(qg_project: Callable[..., Path],
                                                                 pytester: pytest.Pytester) -> None:
    """The embedded tiny checkpoint, one case, three schemes: the terminal summary, results.json and
    the report agree on each component's stored bytes, and each scheme is held to its own kind's
    measured thresholds (T5 alone: the T5 kind's, not the DiT's)."""
    from quant_guard.config.thresholds import Thresholds, embedded_thresholds, resolve_thresholds

    qg_project(checkpoint_extra=MATRIX)
    result = pytester.runpytest("--update-golden", "--qg-report=all")
    result.assert_outcomes(passed=3)
    records = json.loads((pytester.path / "qg-report" / "results.json").read_text(encoding="utf-8"))["results"]
    stored = {r["scheme"]: r["candidate_render"]["component_weight_bytes"] for r in records}
    assert stored["t5-float8"]["dit"] == 2 * stored["dit-float8"]["dit"] == 2 * stored["dit-t5-float8"]["dit"]
    assert stored["dit-float8"][T5] == 2 * stored["t5-float8"][T5] == 2 * stored["dit-t5-float8"][T5]
    rows = [line for line in result.stdout.lines if line.startswith("  ") and "float8" in line]
    assert [r.split()[0] for r in rows] == ["dit-t5-float8", "dit-float8", "t5-float8"]
    t5_saved, dit_saved = stored["dit-float8"][T5] // 2, stored["t5-float8"]["dit"] // 2
    assert f"{format_bytes(t5_saved)} (−{format_bytes(t5_saved)})" in rows[2]
    assert f"{format_bytes(dit_saved)} (−{format_bytes(dit_saved)})" in rows[1]
    html = (pytester.path / "qg-report" / "index.html").read_text(encoding="utf-8")
    assert all(f"<th>{h}</th>" in html for h in COMPONENT_HEADERS) and html.count('class="point ') == 3
    limits = {r["scheme"]: {c["key"]: c["limit"] for c in r["checks"] if c["source"] == "threshold"} for r in records}
    for record in records:
        spec = record["scheme_spec"]
        scheme = next(s for s in _schemes() if s.id == spec["id"])
        expected = resolve_thresholds(Thresholds.DEFAULT, embedded_thresholds("tiny", scheme.kind,
                                                                              scheme.threshold_parts))
        assert limits[scheme.id]["lpips"] == expected.lpips_max and limits[scheme.id]["psnr"] == expected.psnr_min
    assert limits["t5-float8"]["lpips"] != limits["dit-float8"]["lpips"]  # the T5 kind's own, measured


def _schemes() -> tuple[Any, ...]:
    import tomllib

    from quant_guard.config.project import parse_config

    text = f'[[checkpoints]]\nid = "tiny"\nembedded = "tiny"\n{MATRIX}\n'
    return parse_config(tomllib.loads(text), file=Path("pyproject.toml")).checkpoint("tiny").schemes


def test_the_ci_step_summary_weighs_every_component_too(tmp_path: Path) -> None:
    """ci/step_summary.py ranks with scheme_table; its table says what it weighs: every component's
    bytes (and what each scheme quantizes), not a DiT column that would contradict the order."""
    (tmp_path / "results.json").write_text(json.dumps({"results": component_matrix()}), encoding="utf-8")
    script = Path(__file__).resolve().parents[2] / "ci" / "step_summary.py"
    proc = subprocess.run([sys.executable, "-I", "-S", str(script), str(tmp_path)], capture_output=True, text=True,
                          cwd=tmp_path)  # -I -S: standard library only, as on a CI runner
    assert proc.returncode == 0, proc.stderr
    section = proc.stdout[proc.stdout.index("### Schemes of `tiny`"):]
    assert "on stored bytes of every component and worst LPIPS" in section
    header = next(line for line in section.splitlines() if line.startswith("| scheme"))
    assert "| quantizes | stored weights (all components) |" in header and "stored DiT" not in header
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]]
            for line in section.splitlines() if line.startswith("| `")}
    assert list(rows) == ["`both`", "`dit-only`", "`t5-only`"]
    at = header.split("|")[1:-1].index(" quantizes ")
    total = sum(BF16_COMPONENTS.values())
    both = total - BF16_COMPONENTS["dit"] // 2 - BF16_COMPONENTS[T5] // 2
    assert rows["`both`"][at:at + 2] == [f"dit, {T5}", format_bytes(both)]
    assert rows["`t5-only`"][at:at + 2] == [T5, format_bytes(total - BF16_COMPONENTS[T5] // 2)]

