"""How the configuration is found and what an embedded checkpoint brings without being told."""

from __future__ import annotations

from pathlib import Path

import pytest

from quant_guard.config.project import ConfigError, declares_quant_guard, parse_config
from quant_guard.config import tiny_settings as tiny

FILE = Path("/projects/demo/pyproject.toml")


def _tiny(**extra: object) -> dict[str, object]:
    return {"checkpoints": [{"id": "tiny", "embedded": "tiny", **extra}],
            "cases": [{"id": "c", "prompt": "a red circle on a blue background in the center"}]}


def test_the_embedded_checkpoint_renders_at_the_settings_it_was_measured_at() -> None:
    spec = parse_config(_tiny(), file=FILE).checkpoint("tiny")
    assert (spec.render.steps, spec.render.width, spec.render.height) == (8, 64, 64)
    assert (spec.render.guidance, spec.t5_sequence_length) == (tiny.EMBEDDED_GUIDANCE, tiny.T5_SEQUENCE_LENGTH)
    # a render table changes only the keys it sets
    partial = parse_config(_tiny(render={"steps": 4}), file=FILE).checkpoint("tiny").render
    assert (partial.steps, partial.width, partial.height) == (4, 64, 64)


def test_a_real_checkpoint_keeps_the_flux_defaults() -> None:
    components = {k: f"{k}.safetensors" for k in ("dit", "text_encoder_clip", "text_encoder_t5", "vae",
                                                  "tokenizer_clip", "tokenizer_t5")}
    spec = parse_config({"checkpoints": [{"id": "real", "components": components}], "cases": []},
                        file=FILE).checkpoint("real")
    assert (spec.render.steps, spec.render.width, spec.t5_sequence_length) == (20, 1024, 512)


def test_t5_sequence_length_on_the_embedded_checkpoint_is_refused_not_ignored() -> None:
    with pytest.raises(ConfigError, match=r"checkpoints\[0\]\.t5_sequence_length: .*trained with \(16\)"):
        parse_config(_tiny(t5_sequence_length=512), file=FILE)


@pytest.mark.parametrize(("text", "declares"), [
    ('[project]\nname = "x"\n# [tool.quant_guard] lives in qg.toml\n', False),
    ('[project]\nname = "x"\ndescription = "see [tool.quant_guard]"\n', False),
    ("[tool.quant_guard]\n", True),
    ("[tool.quant_guard.thresholds]\nlpips = 0.1\n", True),
    ('[[tool.quant_guard.cases]]\nid = "a"\nprompt = "b"\n', True),
    ("[tool.quant_guard\n", True),  # broken TOML that mentions the table: load_config names the error
    ("[tool.other\n", False),
])
def test_only_a_real_table_declares_the_configuration(tmp_path: Path, text: str, declares: bool) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(text)
    assert declares_quant_guard(pyproject) is declares


def test_a_comment_naming_the_table_does_not_make_pytest_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", pyproject='[project]\nname = "demo"\n# [tool.quant_guard] is configured elsewhere\n')
    pytester.makepyfile(test_plain="def test_ok():\n    assert True\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
