"""The gate on the tiny Wan's clips, end to end through pytest, in one project (one update, one
check: CI time): honest float8 passes; a float8 file of a DiT with noise on block 0 (as
``test_family_gate.py`` damages the image families) fails on its frames; and a damage that breaks
only the clip's coherence over time (``tiny_wan.damage.latent_frame_offset``: a random offset per
latent frame on the DiT's prediction, float8 storage otherwise) keeps every frame within the
float8 limits and fails on the temporal limit alone.

The offset is not a weight edit (the DiT's weights act on every frame alike), so the inner run's
conftest applies it around the render of one scheme, ``temporal-damaged``."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

PROJECT = textwrap.dedent("""\
    [tool.quant_guard]
    golden_dir = "golden"
    report_dir = "qg-report"

    [[tool.quant_guard.checkpoints]]
    id = "tiny-wan"
    embedded = "tiny-wan"
    device = "cpu"
    schemes = ["float8_e4m3fn", { id = "temporal-damaged", storage = "float8_e4m3fn" },
               { id = "noise-damaged", storage = "float8_e4m3fn", dit = "DAMAGED" }]

    [[tool.quant_guard.cases]]
    id = "red-circle-moving"
    prompt = "a red circle moving from left to right on a blue background"
    seeds = [0]
    """)

# tests/model/test_tiny_wan.py's strength: exposure flicker 0.21 against float8's 0.03 (5 frames),
# worst frame PSNR 42.6 dB against a 38.5 dB limit (benchmarks/wan_temporal.py --frames 5)
CONFTEST = textwrap.dedent("""
    import pytest

    from quant_guard.model.tiny_wan.damage import latent_frame_offset
    from quant_guard.run import gate


    @pytest.fixture(autouse=True)
    def temporal_damage(monkeypatch):
        render = gate._Renderer.__call__

        def damaged(self, scheme):
            if scheme.id != "temporal-damaged":
                return render(self, scheme)
            pipe = self._session.pipeline(self._plan.case.checkpoint, scheme)
            with latent_frame_offset(pipe.dit, 0.1):
                return render(self, scheme)

        monkeypatch.setattr(gate._Renderer, "__call__", damaged)
    """)

FRAME_LIMITS = {"lpips", "ssim", "psnr"}
TEMPORAL_LIMITS = {"flicker_max", "exposure_flicker_max", "tlp_max"}


def _failed(record: dict) -> set[str]:
    return {c["key"] for c in record["checks"] if not c["passed"]}


@pytest.mark.slow
def test_damage_to_the_frames_or_only_to_time_fails_the_clip_gate(pytester: pytest.Pytester, tmp_path: Path,
                                                                   _heavy_modules: None) -> None:
    from family_support import damaged_dit

    from quant_guard.cli import main as cli_main
    from quant_guard.model.families import embedded_family

    family = embedded_family("tiny-wan")
    assert family.tiny is not None
    family.pipeline_type()  # DiffSynth's Wan modules in the outer process (conftest._heavy_modules)
    family.tiny.register_with_diffsynth()
    noisy = damaged_dit("tiny-wan", family.tiny.built().dit, tmp_path / "noisy-bf16.safetensors", strength=2.0)
    damaged = tmp_path / "noisy-float8.safetensors"
    assert cli_main(["quantize", str(noisy), str(damaged), "--dtype", "float8_e4m3fn"]) == 0

    pytester.makefile(".toml", pyproject=PROJECT.replace("DAMAGED", damaged.as_posix()))
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_visual="def test_visual(qg_case, qg_gate):\n    qg_gate.check(qg_case)\n")
    pytester.runpytest("--update-golden").assert_outcomes(passed=1, failed=2)
    assert (pytester.path / "golden" / "tiny-wan" / "red-circle-moving-s0.png").is_file()
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*tiny-wan-float8_e4m3fn-red-circle-moving-s0* PASSED*",
                                 "*tiny-wan-temporal-damaged-red-circle-moving-s0* FAILED*",
                                 "*tiny-wan-noise-damaged-red-circle-moving-s0* FAILED*"])
    result.stdout.fnmatch_lines(["*temporal-damaged candidate differs from the bf16 golden:*",
                                 "*exposure flicker * > max * (threshold) FAIL*"])
    records = {r["scheme"]: r for r in json.loads((pytester.path / "qg-report" / "results.json").read_text())["results"]}
    for scheme, record in records.items():
        checks = {c["key"] for c in record["checks"] if c["source"] == "threshold"}
        assert FRAME_LIMITS | {"flicker_max", "exposure_flicker_max"} <= checks, scheme
        temporal = record["scorecard"]["temporal"]
        assert temporal["frames"] == 5 and len(temporal["lpips"]) == len(temporal["psnr"]) == 5
    assert not _failed(records["float8_e4m3fn"])
    assert FRAME_LIMITS & _failed(records["noise-damaged"])  # its frames fail
    temporal_only = _failed(records["temporal-damaged"])
    assert temporal_only and temporal_only <= TEMPORAL_LIMITS, temporal_only  # every frame within limits
