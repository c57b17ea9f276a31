"""Goldens made on another machine: the environment fingerprint, the drift tolerance of
--update-golden, the three-way drift check (env-drift vs image-failed), --qg-reference=live and
deterministic checkpoints.

The goldens "from elsewhere" are this machine's goldens re-saved with drift-like noise (as
measured between two CPUs: max 4/255, PSNR about 54 dB) and a consistent sidecar, so every test
here holds whatever machine runs it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file

from drift_support import OTHER_MACHINE, copy_perturbed, perturb_goldens, record_component, rewrite_golden
from helpers import VISUAL_TEST, install_goldens
from quant_guard.config.project import ConfigError, parse_config
from quant_guard.tools.degrade import Degradation, degrade
from quant_guard.judge.drift import Comparison, DriftCheck, DriftOutcome, closeness_checks, decide, within_tolerance
from quant_guard.config.limits import DriftTolerance, ReferenceMode
from quant_guard.store.fingerprint import FINGERPRINT_KEYS, FieldDifference, differences
from quant_guard.judge.metrics import ImageMetrics
from quant_guard.judge.checks import MetricCheck
from quant_guard.model.tiny.build import ensure_tiny_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- the fingerprint ------------------------------------------------------------------------

def test_fingerprint_records_device_versions_cpu_features_and_determinism() -> None:
    from quant_guard.store.fingerprint import environment

    env = environment("cpu")
    assert set(FINGERPRINT_KEYS) - {"compute_capability", "driver"} <= set(env)
    assert isinstance(env["cpu_features"], list) and set(env["cpu_features"]) <= {
        "avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "amx_int8"}
    assert set(env["determinism"]) == {"deterministic_algorithms", "cudnn_deterministic", "cudnn_benchmark",
                                       "tf32_matmul", "tf32_cudnn", "cublas_workspace_config"}
    assert env["torch"] and env["diffsynth"] and env["device"] == "cpu"


def test_fingerprint_differences_name_fields_and_skip_what_an_old_sidecar_lacks() -> None:
    current = {"device": "cpu", "device_name": "AMD EPYC", "torch": "2.14.1", "cpu_features": ["avx512_bf16"],
               "determinism": {"deterministic_algorithms": True, "tf32_matmul": False}, "created": "now"}
    old_sidecar = {"device": "cpu", "device_name": "Intel Xeon", "torch": "2.14.1", "created": "then"}
    assert differences(old_sidecar, current) == (FieldDifference("device_name", "Intel Xeon", "AMD EPYC"),)
    newer = {**current, "cpu_features": ["avx512_bf16", "amx_bf16"],
             "determinism": {"deterministic_algorithms": False, "tf32_matmul": False}}
    assert [d.describe() for d in differences(newer, current)] == [
        "cpu_features: [avx512_bf16, amx_bf16] -> [avx512_bf16]",
        "determinism.deterministic_algorithms: False -> True"]
    assert differences(None, current) == () and differences(dict(current), current) == ()


def test_committed_sidecars_without_the_new_fields_still_load() -> None:
    from quant_guard.store.golden import GoldenKey, GoldenStore

    golden = GoldenStore(ROOT / "golden").load(GoldenKey("tiny", "red-circle-blue", 0), width=64, height=64)
    assert "cpu_features" not in golden.metadata["environment"]
    assert all(d.field in golden.metadata["environment"] for d in differences(golden.metadata["environment"],
                                                                                {**golden.metadata["environment"],
                                                                                 "cpu_features": ["amx_bf16"]}))


# ---- the verdict of the three comparisons -----------------------------------------------------

def _comparison(passed: bool) -> Comparison:
    m = ImageMetrics(lpips=0.0, ssim=1.0, psnr=60.0)
    return Comparison("x", m, (MetricCheck("PSNR", 60.0, 50.0 if passed else 70.0, True, "threshold"),))


CAUSE = (FieldDifference("torch", "2.13.0", "2.14.1"),)


@pytest.mark.parametrize(("reproduces", "quantization", "cause", "close", "mode", "outcome"), [
    (False, True, True, True, ReferenceMode.GOLDEN, DriftOutcome.ENV_DRIFT),
    (False, True, False, True, ReferenceMode.GOLDEN, DriftOutcome.UNKNOWN_CAUSE),  # nothing recorded changed
    (False, True, False, False, ReferenceMode.GOLDEN, DriftOutcome.UNKNOWN_CAUSE),
    (False, True, True, False, ReferenceMode.GOLDEN, DriftOutcome.NOT_CLEARED),  # not as close as honest
    (False, False, True, True, ReferenceMode.GOLDEN, DriftOutcome.QUANTIZATION_FAILED),
    (True, False, True, True, ReferenceMode.GOLDEN, DriftOutcome.QUANTIZATION_FAILED),
    (True, True, False, False, ReferenceMode.GOLDEN, DriftOutcome.PASSED),  # within tolerance: reproduced
    (False, True, False, False, ReferenceMode.LIVE, DriftOutcome.PASSED),  # live: drift cannot fail a case
    (False, False, True, True, ReferenceMode.LIVE, DriftOutcome.QUANTIZATION_FAILED),
])
def test_drift_verdicts(reproduces: bool, quantization: bool, cause: bool, close: bool, mode: ReferenceMode,
                        outcome: DriftOutcome) -> None:
    closeness = (MetricCheck("PSNR", 48.0, 40.0 if close else 50.0, True, "drift tolerance"),)
    check = DriftCheck(_comparison(False), _comparison(reproduces), _comparison(quantization),
                       fingerprint=CAUSE if cause else (), closeness=closeness, mode=mode)
    assert decide(check, mode) is outcome and check.outcome is outcome


def test_without_expected_metrics_only_the_drift_tolerance_clears_a_candidate() -> None:
    """Thresholds alone let damage through (noise on a DiT block: 44.5 dB from bf16, honest float8
    48.7 dB, both far above any threshold): with no expected metrics the candidate must be within
    the drift tolerance of bf16 now; with them, nothing more is asked."""
    tolerance = DriftTolerance()
    damaged = ImageMetrics(lpips=0.00028, ssim=0.998, psnr=44.5)
    assert closeness_checks(damaged, tolerance, expected_judged=True) == ()
    checks = closeness_checks(damaged, tolerance, expected_judged=False)
    assert [(c.metric, c.passed) for c in checks] == [("LPIPS", True), ("PSNR", False)]
    assert all(c.source == "drift tolerance, no expected metrics" for c in checks)
    assert all(c.passed for c in closeness_checks(ImageMetrics(lpips=0.0001, ssim=0.999, psnr=54.0), tolerance,
                                                  expected_judged=False))


def test_drift_tolerance_from_measurement() -> None:
    tolerance = DriftTolerance()
    # two CPUs, the worst tiny golden: PSNR 53.8 dB, LPIPS 0.0001 -> drift
    assert within_tolerance(tolerance, ImageMetrics(lpips=0.0001, ssim=0.997, psnr=53.8))
    # honest float8 on the tiny model: about 48 dB, LPIPS 0.0004 -> a real change
    assert not within_tolerance(tolerance, ImageMetrics(lpips=0.0004, ssim=0.996, psnr=48.0))


def test_config_keys_for_drift_reference_and_determinism(tmp_path: Path) -> None:
    file = tmp_path / "qg.toml"
    config = parse_config({"reference": "live", "drift_tolerance": {"psnr": 45.0, "lpips": 0.002},
                           "checkpoints": [{"id": "tiny", "embedded": "tiny", "deterministic": True}]}, file=file)
    assert config.reference is ReferenceMode.LIVE and config.drift_tolerance == DriftTolerance(lpips=0.002, psnr=45.0)
    assert config.checkpoints[0].deterministic
    default = parse_config({"checkpoints": [{"id": "tiny", "embedded": "tiny"}]}, file=file)
    assert default.reference is ReferenceMode.GOLDEN and default.drift_tolerance == DriftTolerance()
    assert not default.checkpoints[0].deterministic
    for bad, key in (({"reference": "bf16"}, "tool.quant_guard.reference"),
                     ({"drift_tolerance": {"psnr": "high"}}, "tool.quant_guard.drift_tolerance.psnr"),
                     ({"drift_tolerance": {"ssim": 0.9}}, "tool.quant_guard.drift_tolerance.ssim"),
                     ({"checkpoints": [{"id": "t", "embedded": "tiny", "deterministic": "yes"}]},
                      "tool.quant_guard.checkpoints[0].deterministic")):
        with pytest.raises(ConfigError) as info:
            parse_config(bad, file=file)
        assert str(info.value).startswith(f"{file}: {key}: ")


# ---- --update-golden does not churn ---------------------------------------------------------

def test_update_keeps_goldens_within_drift_tolerance_and_force_rewrites(
        pytester: pytest.Pytester, qg_project: Callable[..., Path], baseline: Callable[..., Path]) -> None:
    root = qg_project(seeds="[0, 1]")
    install_goldens(baseline(seeds="[0, 1]"), root)  # what --update-golden writes, made once per session
    golden = root / "golden"
    made_here = _hashes(golden)
    perturb_goldens(golden, environment=OTHER_MACHINE)
    elsewhere = _hashes(golden)

    kept = pytester.runpytest("--update-golden")
    kept.assert_outcomes(passed=2)
    kept.stdout.fnmatch_lines(["quant_guard: goldens 0 created, 0 updated, 2 unchanged (2 within drift tolerance)"])
    images = {k: v for k, v in elsewhere.items() if not k.endswith(".expected.yml")}
    # PNG and sidecar (with the other machine's fingerprint) kept; the expected metrics are measured
    # against the kept golden and rewritten only where they moved beyond their tolerance
    assert {k: v for k, v in _hashes(golden).items() if k in images} == images
    measured = _hashes(golden)
    again = pytester.runpytest("--update-golden")
    again.stdout.fnmatch_lines(["quant_guard: expected metrics 0 recorded, 2 unchanged (within tolerance)"])
    assert _hashes(golden) == measured

    # expected metrics missing beside a kept golden: measured against the kept golden, the rest untouched
    expected = golden / "tiny" / "red-circle-s0.expected.yml"
    expected.unlink()
    pytester.runpytest("--update-golden").assert_outcomes(passed=2)
    name = "tiny/red-circle-s0.expected.yml"
    now = _hashes(golden)
    assert {k: v for k, v in now.items() if k != name} == {k: v for k, v in measured.items() if k != name}
    pytester.runpytest().assert_outcomes(passed=2)
    # measured against the kept (perturbed) golden: what this check measured against it
    checked = next(r for r in json.loads((root / "qg-report" / "results.json").read_text())["results"]
                   if r["id"] == "tiny-red-circle-s0")
    recorded = yaml.safe_load(expected.read_text())
    assert recorded["lpips"] == round(checked["metrics"]["lpips"], 6)
    assert recorded["psnr"] == round(checked["metrics"]["psnr"], 4)

    forced = pytester.runpytest("--update-golden", "--qg-force")
    forced.assert_outcomes(passed=2)
    forced.stdout.fnmatch_lines(["quant_guard: goldens 0 created, 2 updated, 0 unchanged"])
    again = _hashes(golden)
    pngs = [k for k in again if k.endswith(".png")]
    assert all(again[k] == made_here[k] for k in pngs)  # this machine's renders again
    meta = json.loads((golden / "tiny" / "red-circle-s0.json").read_text())
    assert meta["environment"]["device_name"] != OTHER_MACHINE["device_name"]


# ---- the drift check -------------------------------------------------------------------------

def _shifted(image: np.ndarray, seed: int = 0) -> np.ndarray:
    """A golden from a reference that drifted beyond the tiny thresholds (PSNR about 32 dB < 34)."""
    noise = np.random.default_rng(seed).normal(0.0, 6.0, image.shape)
    return np.clip(image.astype(np.float64) + noise, 0, 255).round().astype(np.uint8)


def test_drifted_golden_is_env_drift_a_damaged_candidate_still_image_failed(
        pytester: pytest.Pytester, qg_project: Callable[..., Path], baseline: Callable[..., Path],
        tmp_path: Path) -> None:
    root = qg_project()
    install_goldens(baseline(), root)
    png = root / "golden" / "tiny" / "red-circle-s0.png"
    rewrite_golden(png, _shifted(np.asarray(Image.open(png))), OTHER_MACHINE)

    drift = pytester.runpytest("--qg-report=all")
    drift.assert_outcomes(failed=1)
    drift.stdout.fnmatch_lines([
        "*tiny-red-circle-s0: environment drift: the bf16 golden no longer reproduces here, and the "
        "float8_e4m3fn candidate passes against the bf16 reference rendered now",
        "*LPIPS     SSIM       PSNR  verdict",
        "*candidate vs golden * FAIL (*PSNR < 34 dB threshold*",
        "*bf16 now vs golden (drift) * FAIL (*PSNR < 50 dB drift tolerance)",
        "*candidate vs bf16 now * ok",
        "*environment differs from the golden's:",
        f"*device_name: {OTHER_MACHINE['device_name']} -> *",
        "*what to do: the environment changed, not the quantization. Re-baseline on this machine with",
        "*pytest --update-golden 'test_visual.py::test_visual[[]tiny-red-circle-s0[]]'",
        "*reference: qg-report/tiny/red-circle-s0/reference.png",
        "*quant_guard environment*",
        "this run's environment differs from the golden's (1 test(s): tiny-red-circle-s0):",
        f"  device_name: {OTHER_MACHINE['device_name']} -> *",
        "*tiny-red-circle-s0: env-drift: environment drift*",
    ])
    record = json.loads((root / "qg-report" / "results.json").read_text())["results"][0]
    assert record["verdict"] == "env-drift" and record["drift"]["golden_reproduces"] is False
    assert record["drift"]["quantization_passed"] is True
    assert [c["name"] for c in (record["drift"][k] for k in ("candidate_vs_golden", "reference_vs_golden",
                                                             "candidate_vs_reference"))] == [
        "candidate vs golden", "bf16 now vs golden (drift)", "candidate vs bf16 now"]
    assert {"field": "device_name", "recorded": OTHER_MACHINE["device_name"]}.items() <= record["fingerprint"][0].items()
    assert (root / "qg-report" / record["images"]["reference"]).is_file()
    page = (root / "qg-report" / "index.html").read_text()
    for text in ("env-drift", "bf16 now vs golden (drift)", "candidate vs bf16 now", "device_name",
                 OTHER_MACHINE["device_name"], "bf16 rendered now"):
        assert text in page, text

    # live reference: judged against this run's bf16 render, the drifted golden does not matter
    live = pytester.runpytest("--qg-reference=live")
    live.assert_outcomes(passed=1)
    record = json.loads((root / "qg-report" / "results.json").read_text())["results"][0]
    assert record["verdict"] == "passed" and record["reference_render"] and record["drift"]["golden_reproduces"] is False

    # a damaged candidate fails against the bf16 render of this run too: not drift
    damaged = tmp_path / "dit-noise.safetensors"
    save_file(degrade(load_file(str(ensure_tiny_checkpoint().dit)), Degradation.NOISE), str(damaged))
    qg_project(checkpoint_extra=f'candidate = {{ dit = "{damaged.as_posix()}" }}')
    failed = pytester.runpytest()
    failed.assert_outcomes(failed=1)
    failed.stdout.fnmatch_lines([
        "*float8_e4m3fn candidate differs from the bf16 golden:*",
        "*drift check: the float8_e4m3fn candidate also fails against the bf16 reference rendered now "
        "(the golden also drifted)",
        "*candidate vs bf16 now * FAIL (*threshold*",
        "*what to do: the quantization regressed, not the environment: investigate the candidate",
        "*tiny-red-circle-s0: image-failed: *",
    ])
    live_damaged = pytester.runpytest("--qg-reference=live")
    live_damaged.assert_outcomes(failed=1)
    live_damaged.stdout.fnmatch_lines(["*tiny-red-circle-s0: image-failed: *"])


def _component_project(pytester: pytest.Pytester, files: dict[str, Path], extra: str = "") -> Path:
    """A project whose checkpoint ``tiny`` is given by component files (so a test can damage one)."""
    from quant_guard.config.tiny_settings import T5_SEQUENCE_LENGTH

    components = "\n".join(f'{k} = "{v.as_posix()}"' for k, v in files.items())
    pytester.makefile(".toml", pyproject=(
        f'[tool.quant_guard]\ngolden_dir = "golden"\nreport_dir = "qg-report"\n{extra}\n'
        f'[[tool.quant_guard.checkpoints]]\nid = "tiny"\ndevice = "cpu"\n'
        f't5_sequence_length = {T5_SEQUENCE_LENGTH}\nrender = {{ steps = 4, size = "64x64" }}\n'
        f'[tool.quant_guard.checkpoints.components]\n{components}\n'
        '[[tool.quant_guard.cases]]\nid = "red-circle"\nprompt = "a red circle on a blue background at the top left"\n'
        'seeds = [0]\ncheckpoints = ["tiny"]\n'))
    pytester.makepyfile(test_visual=VISUAL_TEST)
    return pytester.path


def test_a_vae_cast_nothing_recorded_explains_fails_as_unknown_and_live_is_caught_by_the_golden_history(
        pytester: pytest.Pytester, _heavy_modules: None, tiny_files: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A green cast in the VAE that both pipelines share, with the golden's recorded environment and
    component hashes unchanged: the candidate matches the bf16 render of now, yet this is no
    environment drift (nothing recorded changed) and re-baselining would hide it. Live mode cannot
    see it; the history's comparison with the golden does, and the report marks the live run."""
    from quant_guard.store import history as h

    monkeypatch.delenv("GITHUB_RUN_ID", raising=False)
    root = _component_project(pytester, tiny_files)
    pytester.runpytest("--update-golden").assert_outcomes(passed=1)
    monkeypatch.setenv("QG_RUN_ID", "healthy")
    pytester.runpytest("--qg-reference=live", "--qg-history", "probe").assert_outcomes(passed=1)
    (healthy,) = h.read(root / "probe").records
    nights = [dataclasses.replace(healthy, run_id=f"night{i}", date=f"2026-11-0{i}T02:00:00+00:00") for i in (1, 2, 3)]
    (root / "hist").mkdir()
    (root / "hist" / "ci.jsonl").write_text("".join(r.to_json() + "\n" for r in nights))

    cast = degrade(load_file(str(tiny_files["vae"])), Degradation.COLOUR_CAST, strength=0.3)
    vae = tiny_files["vae"]
    vae.unlink()  # a link to the cached checkpoint: replaced by a file of this test
    save_file(cast, str(vae))
    png = root / "golden" / "tiny" / "red-circle-s0.png"
    record_component(png, "vae", vae)

    failed = pytester.runpytest()
    failed.assert_outcomes(failed=1)
    record = json.loads((root / "qg-report" / "results.json").read_text())["results"][0]
    assert record["verdict"] == "image-failed" and "env-drift" not in failed.stdout.str()
    failed.stdout.fnmatch_lines([
        "*tiny-red-circle-s0: the bf16 render changed for an unknown reason: the golden no longer reproduces here*",
        "*candidate vs bf16 now * ok",
        "*environment: no recorded field differs from the golden's",
        "*what to do: find what changed before anything else. Re-baselining would hide it*",
        "*tiny-red-circle-s0: image-failed: *",
    ])
    assert record["drift"]["outcome"] == "unknown-cause"
    assert record["drift"]["candidate_vs_reference"]["passed"] is True and record["fingerprint"] == []
    # the history of the healthy run kept both comparisons (the golden is this machine's bf16 render)
    assert set(healthy.reference_metrics) == {"lpips", "ssim", "psnr"}
    assert healthy.value("psnr") == pytest.approx(healthy.reference_metrics["psnr"], abs=0.5)

    # live: judged against the damaged bf16 render, it would pass; the golden series of the history fails it
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(
        'report_dir = "qg-report"', 'report_dir = "qg-report"\nhistory_dir = "hist"\n'
        'history_alarm = { metric = "lpips", ratio = 1.5, window = 3, mode = "fail" }'))
    monkeypatch.setenv("QG_RUN_ID", "tonight")
    live = pytester.runpytest("--qg-reference=live", "--qg-report=all")
    live.assert_outcomes(failed=1)
    live.stdout.fnmatch_lines(["*tiny-red-circle-s0: drifted against its history: tiny-red-circle-s0: lpips * > * "
                               "(median * of runs night1, night2, night3*"])
    record = json.loads((root / "qg-report" / "results.json").read_text())["results"][0]
    assert record["verdict"] == "history-drift" and record["drift"]["mode"] == "live"
    assert "against the bf16 render of each run" not in record["history"]["message"]  # not the bf16-now series
    tonight = next(r for r in h.read(root / "hist").records if r.run_id == "tonight")
    assert tonight.value("psnr") < 25 < 45 < tonight.reference_metrics["psnr"]  # the cast shows against the golden only
    page = (root / "qg-report" / "index.html").read_text()
    assert "candidate against the bf16 render of this run (reference = live)" in page
    assert "reference = live: judged against the bf16 render of this run, not the golden" in page


def test_a_damaged_candidate_against_a_drifted_golden_without_expected_is_not_drift(
        pytester: pytest.Pytester, qg_project: Callable[..., Path], baseline: Callable[..., Path],
        tmp_path: Path) -> None:
    """With a recorded cause (another machine) but no expected metrics, the thresholds cannot tell
    noise on a DiT block (44.5 dB from bf16) from honest float8 (48.7 dB): the environment is not
    blamed; honest float8 with its expected metrics still is."""
    root = qg_project()
    install_goldens(baseline(), root)
    png = root / "golden" / "tiny" / "red-circle-s0.png"
    rewrite_golden(png, _shifted(np.asarray(Image.open(png))), OTHER_MACHINE)
    pytester.runpytest().assert_outcomes(failed=1)
    honest = json.loads((root / "qg-report" / "results.json").read_text())["results"][0]
    assert honest["verdict"] == "env-drift"

    damaged = tmp_path / "dit-noise.safetensors"
    save_file(degrade(load_file(str(ensure_tiny_checkpoint().dit)), Degradation.NOISE, strength=0.1), str(damaged))
    qg_project(checkpoint_extra=f'candidate = {{ dit = "{damaged.as_posix()}" }}')
    result = pytester.runpytest("--qg-no-expected")
    result.assert_outcomes(failed=1)
    record = json.loads((root / "qg-report" / "results.json").read_text())["results"][0]
    assert record["verdict"] == "image-failed"
    result.stdout.fnmatch_lines([
        "*tiny-red-circle-s0: drift not proven: the bf16 golden no longer reproduces here and the environment "
        "changed, but with no expected metrics for float8_e4m3fn*",
        "*candidate vs bf16 now * ok",  # within every threshold ...
        "*candidate vs bf16 now, without expected metrics, must be within the drift tolerance:",
        "*PSNR * dB < min 50.00 dB (drift tolerance, no expected metrics) FAIL",  # ... not close enough for drift
        f"*device_name: {OTHER_MACHINE['device_name']} -> *",
        "*tiny-red-circle-s0: image-failed: *",
    ])
    assert record["drift"]["outcome"] == "not-cleared" and honest["drift"]["outcome"] == "env-drift"


def test_golden_within_tolerance_but_over_expected_passes_against_bf16_now(
        pytester: pytest.Pytester, qg_project: Callable[..., Path], baseline: Callable[..., Path]) -> None:
    """Drift adds to the quantization error: a candidate can fail a tight expected bound against
    a golden from another machine while matching it against this machine's bf16 render."""
    root = qg_project(extra_case="", checkpoint_extra="")
    install_goldens(baseline(), root)
    expected = root / "golden" / "tiny" / "red-circle-s0.expected.yml"
    # the candidate's recorded PSNR plus 0.9 dB: it passes its own bf16 render (margin 1 dB) but
    # not a golden with drift-like noise
    text = expected.read_text()
    psnr = float(next(line.split(":")[1] for line in text.splitlines() if line.startswith("psnr")))
    expected.write_text(text.replace(f"psnr: {psnr:g}", f"psnr: {psnr + 0.9:.4f}"))
    perturb_goldens(root / "golden", environment=OTHER_MACHINE)
    result = pytester.runpytest("--qg-report=all")
    result.assert_outcomes(passed=1)
    record = json.loads((root / "qg-report" / "results.json").read_text())["results"][0]
    assert record["verdict"] == "passed" and record["drift"]["golden_reproduces"] is True
    assert record["drift"]["candidate_vs_golden"]["passed"] is False


# ---- no test depends on the machine that made the goldens -------------------------------------

@pytest.mark.slow
def test_visual_suite_passes_against_goldens_made_elsewhere(tmp_path: Path) -> None:
    """Every committed golden as if made on another CPU, by one machine change: drift-like noise on
    the goldens made on this machine's CPU, the real drift of those made on another (noise on top
    of it would be two changes: measured here, an AMD golden against an Intel render 51.4 dB, with
    the noise 49.6 dB)."""
    golden = copy_perturbed(ROOT / "golden", tmp_path / "golden", seed=7, environment=OTHER_MACHINE,
                            one_machine_change=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/visual", "-p", "no:cacheprovider", "-q",
                           f"--qg-golden-dir={golden}", f"--qg-report-dir={tmp_path / 'report'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    # tiny: 5 schemes x 6 (case, seed); each other image family's tiny: 2 schemes x 3 (case, seed);
    # tiny-wan: 2 schemes x 2 clips
    assert "52 passed" in proc.stdout
    assert f"device_name: {OTHER_MACHINE['device_name']} -> " in proc.stdout
    results = json.loads((tmp_path / "report" / "results.json").read_text())["results"]
    assert {r["verdict"] for r in results} == {"passed"} and len(results) == 52


# ---- deterministic checkpoints ----------------------------------------------------------------

@pytest.fixture
def restore_determinism(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """torch's determinism switches are process-wide: put them back after the test."""
    import torch

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)  # restored by monkeypatch
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
     torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) = saved[2:]


def test_enable_full_determinism_sets_what_diffusers_sets(restore_determinism: None) -> None:
    import torch

    from quant_guard.model.determinism import enable_full_determinism
    from quant_guard.store.fingerprint import determinism_state

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    enable_full_determinism()
    assert determinism_state() == {"deterministic_algorithms": True, "cudnn_deterministic": True,
                                   "cudnn_benchmark": False, "tf32_matmul": False, "tf32_cudnn": False,
                                   "cublas_workspace_config": ":4096:8"}
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_deterministic_checkpoint_is_applied_and_recorded(pytester: pytest.Pytester, qg_project: Callable[..., Path],
                                                         restore_determinism: None) -> None:
    import torch

    root = qg_project(checkpoint_extra="deterministic = true")
    pytester.runpytest("--update-golden").assert_outcomes(passed=1)
    assert torch.are_deterministic_algorithms_enabled()  # applied before the pipelines were built
    recorded = json.loads((root / "golden" / "tiny" / "red-circle-s0.json").read_text())["environment"]["determinism"]
    assert recorded["deterministic_algorithms"] is True and recorded["cublas_workspace_config"] == ":4096:8"
    assert recorded["tf32_matmul"] is False and recorded["cudnn_benchmark"] is False
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    assert "quant_guard environment" not in result.stdout.str()  # same settings: no difference to report
