"""Schemes that name the components they quantize (``components = { dit = ..., text_encoder_t5 =
... }``): how the configuration reads them, and the errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from quant_guard.config.project import ConfigError, parse_config
from quant_guard.config.schemes import FLOAT8_E4M3FN, ComponentScheme, Quantization, Scheme


def _schemes(tmp_path: Path, *schemes: Any, embedded: str = "tiny") -> tuple[Scheme, ...]:
    config = parse_config({"checkpoints": [{"id": "ck", "embedded": embedded, "device": "cpu",
                                            "schemes": list(schemes)}],
                           "cases": [{"id": "c", "prompt": "a red circle", "seeds": [0]}]},
                          file=tmp_path / "qg.toml", where="tool.quant_guard")
    return config.checkpoints[0].schemes


def test_a_scheme_names_its_components_each_by_dtype_method_or_table(tmp_path: Path) -> None:
    both, te, dit = _schemes(
        tmp_path,
        {"id": "dit-t5", "components": {"dit": "float8_e4m3fn", "text_encoder_t5": "torchao_int8_w8a16"}},
        {"id": "te", "components": {"text_encoder_clip": {"method": "torchao_int8_w8a16",
                                                          "exclude_modules": ["fc2"]},
                                    "vae": "float8_e5m2"}},
        {"id": "dit-only", "components": {"dit": "float8_e4m3fn"}})
    # the DiT's entry backs the scheme's own fields
    assert both.storage_dtype == "float8_e4m3fn" and both.quantization is None
    assert both.component("text_encoder_t5") == ComponentScheme(quantization=Quantization("torchao_int8_w8a16"))
    assert both.component("vae") == ComponentScheme() and both.targets == ("dit", "text_encoder_t5")
    assert both.kind == "dit:float8_e4m3fn+text_encoder_t5:torchao_int8_w8a16"  # no entry: the loosest of its parts
    assert both.threshold_parts == ("float8_e4m3fn", "text_encoder_t5:torchao_int8_w8a16")
    assert te.threshold_parts == ("text_encoder_clip:torchao_int8_w8a16", "vae:float8_e5m2")
    assert dit.threshold_parts == ("float8_e4m3fn",)
    assert both.as_dict()["components"]["text_encoder_t5"]["quantize"]["method"] == "torchao_int8_w8a16"
    assert both.as_dict()["storage_dtype"] == "float8_e4m3fn"  # the old keys keep meaning the DiT
    assert te.component("dit").is_reference and te.storage_dtype == "bfloat16" and not te.is_reference
    assert te.targets == ("text_encoder_clip", "vae")
    assert te.component("text_encoder_clip").quantization == Quantization("torchao_int8_w8a16",
                                                                          exclude_modules=("fc2",))
    assert "text_encoder_clip torchao_int8_w8a16" in te.describe() and "vae float8_e5m2 storage" in te.describe()
    # naming only the DiT is the DiT-only scheme of the old forms, thresholds included
    assert dit == Scheme("dit-only", storage_dtype="float8_e4m3fn") and dit.kind == FLOAT8_E4M3FN.kind
    assert te.only("vae") == Scheme("te", storage_dtype="float8_e5m2")


@pytest.mark.parametrize(("scheme", "message"), [
    ({"id": "x", "components": {"text_encoder": "float8_e4m3fn"}},
     r"schemes\[0\]\.components\.text_encoder: unknown component .*text_encoder_clip"),
    ({"id": "x", "components": {"tokenizer_t5": "float8_e4m3fn"}},
     r"schemes\[0\]\.components\.tokenizer_t5: is a tokenizer"),
    ({"id": "x", "storage": "float8_e4m3fn", "components": {"dit": "float8_e4m3fn"}},
     r"schemes\[0\]\.storage: goes inside components"),
    ({"id": "x", "method": "torchao_int8_w8a16", "components": {"vae": "float8_e4m3fn"}},
     r"schemes\[0\]\.method: goes inside components"),
    ({"components": {"vae": "float8_e4m3fn"}}, r"schemes\[0\]\.id: is required"),
    ({"id": "x", "components": {}}, r"schemes\[0\]\.components: is empty"),
    ({"id": "x", "components": {"vae": "float8_e4m3"}}, r"schemes\[0\]\.components\.vae: unknown scheme"),
    ({"id": "x", "components": {"vae": {"storage": "float8_e4m3fn", "mode": "dynamic"}}},
     r"schemes\[0\]\.components\.vae\.mode: applies only to a quantization method"),
    ({"id": "x", "components": {"vae": {"method": "torchao_int8_w8a16", "dit": "x.safetensors"}}},
     r"schemes\[0\]\.components\.vae\.dit: unknown key"),
    ({"id": "x", "components": {"vae": 8}}, r"schemes\[0\]\.components\.vae: must be a storage dtype"),
])
def test_component_errors_name_the_key(tmp_path: Path, scheme: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _schemes(tmp_path, scheme)


def test_component_names_are_the_checkpoint_familys(tmp_path: Path) -> None:
    """Another family's component key is unknown for this one (the family's keys come from config/families.py)."""
    (scheme,) = _schemes(tmp_path, {"id": "x", "components": {"text_encoder": "float8_e4m3fn"}},
                         embedded="tiny-z-image")
    assert scheme.targets == ("text_encoder",)
    with pytest.raises(ConfigError, match=r"components\.text_encoder_t5: unknown component .*z-image"):
        _schemes(tmp_path, {"id": "x", "components": {"text_encoder_t5": "float8_e4m3fn"}}, embedded="tiny-z-image")
