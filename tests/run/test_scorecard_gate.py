"""The scorecard in the gate: limits on its numbers at every level thresholds can be set, the
expected mode on them, the meaning check, the words of the failure message, results.json, and
the report's scorecard table and anomaly counts (real tiny runs through pytest itself)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from quant_guard.config.project import parse_config
from quant_guard.judge.metrics import compare_images, compare_with_maps, lpips_spatial_map, ssim_with_map
from quant_guard.report.view import build_view
from quant_guard.config.thresholds import DIMENSIONS, LIMITS, EMBEDDED_THRESHOLDS, ExpectedSettings, Thresholds, resolve_thresholds
from quant_guard.judge.checks import check_expected, check_thresholds
from quant_guard.judge.scorecard import compute_scorecard


def _record(pytester: pytest.Pytester) -> dict[str, Any]:
    data = json.loads((pytester.path / "qg-report" / "results.json").read_text(encoding="utf-8"))
    (record,) = data["results"]
    return record  # type: ignore[no-any-return]


def test_every_result_carries_the_scorecard_and_the_tiny_colour_limit(pytester: pytest.Pytester,
                                                                      baselined: Callable[..., Path]) -> None:
    recorded = yaml.safe_load((pytester.path / "golden" / "tiny" / "red-circle-s0.expected.yml").read_text())
    # the update recorded the scorecard's numbers beside LPIPS/SSIM/PSNR, for the expected mode
    assert {"colour_delta_e_p95", "sharpness", "structure_worst", "artifacts_worst"} <= set(recorded["scorecard"])
    pytester.runpytest().assert_outcomes(passed=1)
    record = _record(pytester)
    card = record["scorecard"]
    assert card["colour"]["delta_e_p95"] < EMBEDDED_THRESHOLDS["tiny"]["float8_e4m3fn"].colour_delta_e_p95  # type: ignore[operator]
    # honest float8 keeps the detail: every honest tiny pair measured a sharpness ratio of
    # SHARPNESS_WORST_HONEST or more, above the words' "softer" bound (scorecard.SOFTER)
    assert card["sharpness"]["words"] == "as sharp"
    assert card["artifacts"]["kind"] == "LPIPS" and card["structure"]["ssim"] == record["metrics"]["ssim"]
    assert card["words"].startswith("colour: ΔE mean") and "sharpness" in card["words"]
    colour = [c for c in record["checks"] if c["key"] == "colour_delta_e_p95"]
    # the embedded tiny checkpoint's own colour limit, and the expected mode on the recorded value
    assert [(c["source"], c["dimension"], c["passed"]) for c in colour] == [("threshold", "colour", True),
                                                                           ("expected", "colour", True)]
    assert colour[1]["limit"] == pytest.approx(recorded["scorecard"]["colour_delta_e_p95"] + 0.5)


@pytest.mark.parametrize(("where", "key"), [("checkpoint", "colour_delta_e_p95"), ("case", "colour_delta_e_p95"),
                                            ("case", "sharpness_worst_min")])
def test_a_scorecard_limit_fails_when_tight_and_passes_when_loose(pytester: pytest.Pytester,
                                                                  baselined: Callable[..., Path],
                                                                  where: str, key: str) -> None:
    tight, loose = (0.0, 100.0) if key == "colour_delta_e_p95" else (50.0, 0.0)
    level = "checkpoint_extra" if where == "checkpoint" else "extra_case"
    baselined(**{level: f"thresholds = {{ {key} = {tight} }}"})
    result = pytester.runpytest("--qg-no-expected")
    result.assert_outcomes(failed=1)
    metric = next(limit.metric for limit in LIMITS if limit.key == key)
    result.stdout.fnmatch_lines([f"*{metric} * (threshold) FAIL*", "*in words: colour: ΔE mean *"])
    assert "(limit " in result.stdout.str()  # the words name the limit next to its number
    baselined(**{level: f"thresholds = {{ {key} = {loose} }}"})
    pytester.runpytest("--qg-no-expected").assert_outcomes(passed=1)


def _root_table(pytester: pytest.Pytester, table: str) -> None:
    """Add a table under [tool.quant_guard] of the project's configuration."""
    path = pytester.path / "pyproject.toml"
    path.write_text(path.read_text().replace('report_dir = "qg-report"', f'report_dir = "qg-report"\n\n{table}\n', 1))


def test_package_level_limit_and_the_words_of_the_failure(pytester: pytest.Pytester,
                                                          baselined: Callable[..., Path]) -> None:
    # the global table is the least specific level: it applies where the checkpoint sets nothing
    # (the tiny checkpoint sets sharpness_min for float8, not sharpness_max)
    _root_table(pytester, "[tool.quant_guard.thresholds]\nsharpness_min = 0.2\nsharpness_max = 0.5")
    result = pytester.runpytest("--qg-no-expected")
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert "sharpness" in text and "> max 0.5000 (threshold) FAIL" in text
    assert ">= min 0.8800 (threshold) ok" in text and "min 0.2" not in text  # the checkpoint's sharpness_min wins
    words = next(line for line in text.splitlines() if "in words:" in line)
    # colour, then sharpness with its limit and what it means, then structure and artifacts
    assert "colour: ΔE mean " in words and ", p95 " in words and "(min 0.88, max 0.5) (" in words
    assert "; structure: SSIM " in words and "; artifacts: worst LPIPS region " in words
    record = _record(pytester)
    assert record["verdict"] == "image-failed" and "in words:" in record["reason"]


def test_marker_sets_a_scorecard_limit_and_the_command_line_overrides_it(pytester: pytest.Pytester,
                                                                         baselined: Callable[..., Path]) -> None:
    pytester.makepyfile(test_visual="""
        import pytest

        @pytest.mark.qg_thresholds(sharpness_max=0.01)
        def test_visual(qg_case, qg_gate):
            qg_gate.check(qg_case)
        """)
    marked = pytester.runpytest()
    marked.assert_outcomes(failed=1)
    marked.stdout.fnmatch_lines(["*sharpness * > max 0.0100 (threshold) FAIL*"])
    pytester.runpytest("--qg-limit", "sharpness_max=1000").assert_outcomes(passed=1)


def test_bad_limits_on_the_command_line_and_markers_are_usage_errors(pytester: pytest.Pytester,
                                                                     qg_project: Callable[..., Path]) -> None:
    qg_project()
    result = pytester.runpytest("--qg-limit", "colour_delta_e_p99=3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--qg-limit: unknown key 'colour_delta_e_p99'; known: lpips, ssim, psnr, colour_*"])
    result = pytester.runpytest("--qg-limit", "colour_hue_shift=400")
    result.stderr.fnmatch_lines(["*--qg-limit colour_hue_shift must be between 0.0 and 180.0, got 400.0*"])
    pytester.makepyfile(test_visual="""
        import pytest

        @pytest.mark.qg_thresholds(sharpness_min=-1)
        def test_visual(qg_case, qg_gate):
            qg_gate.check(qg_case)
        """)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*qg_thresholds(sharpness_min=...) must be between 0.0 and 100.0, got -1*"])


def test_expected_mode_holds_the_scorecard_to_its_recorded_numbers(pytester: pytest.Pytester,
                                                                   baselined: Callable[..., Path]) -> None:
    path = pytester.path / "golden" / "tiny" / "red-circle-s0.expected.yml"
    data = yaml.safe_load(path.read_text())
    # pretend the last baseline's candidate had no colour difference at all, and allow none
    data["scorecard"]["colour_delta_e_p95"] = 0.0
    path.write_text(yaml.safe_dump(data))
    _root_table(pytester, "[tool.quant_guard.expected]\ndelta_e_margin = 0.0")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ΔE p95 * > max 0.0000 (expected) FAIL*"])  # recorded 0.0 + delta_e_margin
    assert "(limit 3.0, expected max 0)" in result.stdout.str()  # in the words too
    pytester.runpytest("--qg-no-expected").assert_outcomes(passed=1)
    # without a limit on it, a scorecard number is reported, not held to its recorded value
    baselined(checkpoint_extra='thresholds = { colour_delta_e_p95 = 100.0 }')
    _root_table(pytester, "[tool.quant_guard.expected]\ndelta_e_margin = 0.0")
    data["scorecard"]["sharpness_worst"] = 100.0  # tiny limits sharpness (float8), not its worst region
    path.write_text(yaml.safe_dump(data))
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)  # the colour limit is set: its expected check still holds
    assert "worst region" not in "\n".join(line for line in result.stdout.lines if "(expected)" in line)


def test_meaning_check_on_a_dataset_caption_and_a_missing_clip_model(pytester: pytest.Pytester,
                                                                     baselined: Callable[..., Path],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    baselined(extra_case='thresholds = { meaning = "tiny-colours" }')
    pytester.runpytest().assert_outcomes(passed=1)
    record = _record(pytester)
    assert record["scorecard"]["meaning"]["agrees"] is True
    assert record["scorecard"]["meaning"]["candidate"]["detail"].startswith(
        "a red circle on a blue background at the top left, dataset size (x")
    assert [c["passed"] for c in record["checks"] if c["key"] == "meaning"] == [True]
    monkeypatch.delenv("QG_CLIP_MODEL", raising=False)
    baselined(extra_case='thresholds = { meaning = "clip" }')
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the meaning check (thresholds key 'meaning') cannot run: scorer 'clip' needs a "
                                 "local CLIP model folder*"])
    assert _record(pytester)["verdict"] == "error"


# ---- without rendering ---------------------------------------------------------------------------

def test_metrics_and_maps_in_one_pass_are_the_same_numbers() -> None:
    rng = np.random.default_rng(0)
    golden = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    candidate = np.clip(golden.astype(np.int16) + rng.integers(-20, 21, golden.shape), 0, 255).astype(np.uint8)
    metrics, maps = compare_with_maps(golden, candidate)
    assert metrics == compare_images(golden, candidate)
    assert np.array_equal(maps.lpips, lpips_spatial_map(golden, candidate))
    assert np.array_equal(maps.ssim, ssim_with_map(golden, candidate)[1])
    reused = compute_scorecard(golden, candidate, lpips_map=maps.lpips, ssim=(metrics.ssim, maps.ssim))
    assert reused == compute_scorecard(golden, candidate)


def test_the_sharpness_words_say_what_happened_to_the_detail() -> None:
    from quant_guard.tools.degrade import soften_image

    rng = np.random.default_rng(1)
    golden = np.clip(rng.normal(128, 30, (64, 64, 3)), 0, 255).astype(np.uint8)
    grainier = np.clip(golden + rng.normal(0, 25, golden.shape), 0, 255).astype(np.uint8)
    words = {name: compute_scorecard(golden, candidate).to_json()["sharpness"]["words"]
             for name, candidate in (("same", golden), ("blurred", soften_image(golden)), ("grainier", grainier))}
    assert words == {"same": "as sharp", "blurred": "softer", "grainier": "more fine detail or noise"}


def test_every_limit_key_parses_at_every_level(tmp_path: Path) -> None:
    table = {limit.key: (limit.low + min(limit.high, 10.0)) / 2 for limit in LIMITS} | {"meaning": "tiny-colours"}
    config = parse_config({"thresholds": table, "checkpoints": [{"id": "t", "embedded": "tiny"}],
                           "cases": [{"id": "c", "prompt": "p", "thresholds": {"sharpness_min": 0.5}}]},
                          file=tmp_path / "qg.toml")
    limits = resolve_thresholds(config.thresholds, config.cases[0].thresholds)
    for limit in LIMITS:
        expected = 0.5 if limit.key == "sharpness_min" else table[limit.key]
        assert limits.limit(limit) == expected, limit.key
    assert limits.scorer == "tiny-colours"
    assert resolve_thresholds(limits, type(config.cases[0].thresholds)(meaning="off")).scorer is None


def test_scorecard_checks_need_their_limit_and_their_number() -> None:
    golden = np.full((64, 64, 3), 40, np.uint8)  # grey: no saturated pixel, so no hue to bound
    candidate = golden.copy()
    candidate[20:40, 20:40] = 200
    metrics, card = compare_images(golden, candidate), compute_scorecard(golden, candidate)
    assert {c.key for c in check_thresholds(metrics, Thresholds.DEFAULT, card)} == {"lpips", "ssim", "psnr"}
    limits = Thresholds(0.1, 0.85, 22.0, colour_hue_shift=5.0, colour_delta_e_mean=1.0)
    assert [c.key for c in check_thresholds(metrics, limits, card)][3:] == ["colour_delta_e_mean"]
    recorded = {k: v for k, v in card.values().items() if v is not None}
    expected = check_expected(metrics, metrics, ExpectedSettings(), limits=limits, scorecard=card,
                              expected_scorecard=recorded)
    assert [c.key for c in expected] == ["lpips", "ssim", "psnr", "colour_delta_e_mean"]
    assert all(c.passed for c in expected)
    # a golden recorded before the scorecard existed: LPIPS/SSIM/PSNR only
    assert [c.key for c in check_expected(metrics, metrics, ExpectedSettings(), limits=limits, scorecard=card)] == [
        "lpips", "ssim", "psnr"]


def _check(key: str, passed: bool) -> dict[str, Any]:
    dimension = next((limit.dimension for limit in LIMITS if limit.key == key), "meaning")
    return {"metric": key, "key": key, "value": 1.0, "limit": 1.0, "higher_is_better": False,
            "source": "threshold", "passed": passed, "dimension": dimension}


def test_stability_table_counts_anomalies_per_dimension() -> None:
    def record(seed: int, checks: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": f"t-c-s{seed}", "checkpoint": "t", "case": "c", "seed": seed, "verdict": "passed",
                "passed": all(c["passed"] for c in checks), "outcome": "passed", "checks": checks,
                "metrics": {"lpips": 0.01, "ssim": 0.99, "psnr": 40.0}}

    records = [
        record(0, [_check("lpips", True), _check("colour_delta_e_p95", False), _check("sharpness_min", False)]),
        record(1, [_check("lpips", False), _check("colour_delta_e_p95", False), _check("sharpness_min", True),
                   _check("text_cer_max", False)]),
        record(2, [_check("lpips", True), _check("colour_delta_e_p95", True), _check("sharpness_min", True)]),
    ]
    view = build_view({"results": records})
    headers = view.spread_headers
    (row,) = view.tables[0].spread
    cells = {h: c.text for h, c in zip(headers, row.cells)}
    # structure, colour, sharpness, meaning (no limit), text (garbled on the one seed that checks it),
    # temporal (an image has no flicker limit)
    assert [cells[w.capitalize()] for w in DIMENSIONS.values()] == ["1 of 3", "2 of 3", "1 of 3", "–", "1 of 3", "–"]
    assert cells["Seeds over a limit"] == "2 of 3"
