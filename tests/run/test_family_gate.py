"""The gate on every model family's embedded tiny checkpoint, end to end through pytest: the bf16
golden made by ``--update-golden``, then the honest float8 candidate passes and a float8 file of a
damaged DiT fails with the metric message, both against the family's own thresholds.

Each family is damaged with the mildest kind its random-weight tiny can tell from honest float8
(``benchmarks/family_thresholds.py``; README, "Model families": what each one misses)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from quant_guard.cli import main as cli_main

# embedded tiny -> (degrade kind, strength): every image of it fails the family's float8 thresholds
DAMAGE = {"tiny-qwen-image": ("noise", 2.0), "tiny-z-image": ("drop-text", None), "tiny-flux2": ("noise", 2.0)}


def _project(embedded: str, damaged: Path) -> str:
    return textwrap.dedent(f"""
        [tool.quant_guard]
        golden_dir = "golden"
        report_dir = "qg-report"

        [[tool.quant_guard.checkpoints]]
        id = "{embedded}"
        embedded = "{embedded}"
        device = "cpu"
        schemes = ["float8_e4m3fn", {{ id = "damaged", storage = "float8_e4m3fn", dit = "{damaged.as_posix()}" }}]

        [[tool.quant_guard.cases]]
        id = "red-circle"
        prompt = "a red circle on a blue background at the top left"
        seeds = [0]
        """)


@pytest.mark.slow
@pytest.mark.parametrize("embedded", sorted(DAMAGE))
def test_a_damaged_dit_fails_the_gate_of_its_family(pytester: pytest.Pytester, tmp_path: Path, embedded: str,
                                                    _heavy_modules: None) -> None:
    from safetensors.torch import load_file, save_file

    from quant_guard.model.families import embedded_family
    from quant_guard.tools.degrade import degrade

    family = embedded_family(embedded)
    assert family.tiny is not None
    # the family's DiffSynth and transformers modules in the outer process, before the in-process
    # runs (each run removes what it imported: conftest._heavy_modules)
    family.pipeline_type()
    family.tiny.register_with_diffsynth()
    kind, strength = DAMAGE[embedded]
    bf16 = tmp_path / "damaged-bf16.safetensors"
    state = load_file(str(family.tiny.built().dit))
    save_file(degrade(state, kind, strength=strength, family=family), str(bf16))
    damaged = tmp_path / "damaged-float8.safetensors"  # a pre-quantized float8 file, as one would ship it
    assert cli_main(["quantize", str(bf16), str(damaged), "--dtype", "float8_e4m3fn"]) == 0

    pytester.makefile(".toml", pyproject=_project(embedded, damaged))
    pytester.makepyfile(test_visual=textwrap.dedent("""
        def test_visual(qg_case, qg_gate):
            qg_gate.check(qg_case)
        """))
    # the update writes the bf16 golden and already judges both candidates against it
    pytester.runpytest("--update-golden").assert_outcomes(passed=1, failed=1)
    assert (pytester.path / "golden" / embedded / "red-circle-s0.png").is_file()
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([f"*test_visual*{embedded}-float8_e4m3fn-red-circle-s0* PASSED*",
                                 f"*test_visual*{embedded}-damaged-red-circle-s0* FAILED*"])
    result.stdout.fnmatch_lines(["*damaged candidate differs from the bf16 golden:*", "*(threshold) FAIL*"])
