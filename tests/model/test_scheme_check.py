"""The check that a built DiT is what its scheme says (scheme_check.py, scheme_kinds.py,
quant_grid.py): every scheme kind's weight format, activation handling and stored bytes, the bf16
reference bf16 everywhere, dequant_once layers on the method's grid. Each DiT of another kind,
or tampered with, is refused with a message naming the layer, what was expected and what was found."""

from __future__ import annotations

import contextlib
import copy
import io
import re
from collections.abc import Callable
from typing import Any

import pytest

from quant_guard.model.checkpoints import CheckpointError
from quant_guard.model.scheme_check import check_scheme_applied, differences, inventory, weight_format
from quant_guard.model.scheme_kinds import GENERIC_MAX_RATIO, METHODS, expectation
from quant_guard.config.schemes import FLOAT8_E4M3FN, REFERENCE, Quantization, Scheme
from scheme_support import build, tiny_checkpoint


def _method(method: str, mode: str = "dynamic") -> Scheme:
    return Scheme(method if mode == "dynamic" else f"{method}-once", quantization=Quantization(method, mode=mode))


INT8, INT8_A8 = _method("torchao_int8_w8a16"), _method("torchao_int8_w8a8")
FP8, FP8_A8, NF4 = _method("torchao_fp8_w8a16"), _method("torchao_fp8_w8a8"), _method("bitsandbytes_nf4")
ONCE = {m: _method(m, "dequant_once") for m in ("torchao_int8_w8a16", "torchao_fp8_w8a16", "bitsandbytes_nf4")}
HONEST = (REFERENCE, FLOAT8_E4M3FN, INT8, INT8_A8, FP8, NF4, *ONCE.values())
# What the tiny DiT's 36 linear layers store (weights only; the DiT's whole stored bytes are in the report)
FIRST = "time_embedder.timestep_embedder.0"  # the first linear layer DiffSynth's FluxDiT lists


@pytest.fixture(scope="module")
def dits() -> dict[str, Any]:
    """Each honest scheme's tiny DiT, loaded once through DiffSynth into one pipeline (swap_dit checks it)."""
    from quant_guard.model.pipelines import default_plan, swap_dit

    tiny = tiny_checkpoint()
    pipe = build(tiny, REFERENCE)
    built = {REFERENCE.id: pipe.dit}
    for scheme in HONEST[1:]:
        swap_dit(pipe, tiny, scheme, default_plan(scheme, "cpu"))
        built[scheme.id] = pipe.dit
    return built


def _refused(dit: Any, scheme: Scheme, message: str) -> str:
    with pytest.raises(CheckpointError) as caught:
        check_scheme_applied(dit, scheme, "tiny")
    text = str(caught.value)
    assert message in text, text
    return text


# ---- the table is what DiffSynth builds --------------------------------------------------------

@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_known_method_quantizes_a_layer_as_the_table_says(method: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    import torchao.quantization.quant_api as torchao_api
    from diffsynth.core.quant import QuantizeConfig

    # torchao_fp8_w8a8 refuses a CPU before it builds anything; its weight is built the same way
    # on any device (only the forward needs compute capability 8.9)
    monkeypatch.setattr(torchao_api, "_check_hardware_support", lambda granularity: None)
    with contextlib.redirect_stdout(io.StringIO()):
        config = QuantizeConfig(method=method)
    want = METHODS[method]
    assert type(config.backend.config).__name__ == want.config  # the method still builds this config
    layer = torch.nn.Linear(256, 64, dtype=torch.bfloat16)
    found = _inventory_of(config.backend.create_quantized_linear(layer), config).layers[0]
    assert (found.format, found.activations) == (want.format, want.activations)
    assert differences(found, want) == []


def _inventory_of(module: Any, config: Any) -> Any:
    import torch

    dit = torch.nn.Sequential(module)
    dit.quantize_config = config
    return inventory(dit)


def test_a_known_method_with_another_layout_keeps_format_and_activations_but_not_the_grid() -> None:
    grouped = expectation(Scheme("g", quantization=Quantization("torchao_int8_w8a16",
                                                                backend_config_kwargs=(("group_size", 32),))))
    assert (grouped.format, grouped.activations, grouped.grid) == (METHODS["torchao_int8_w8a16"].format, "bfloat16",
                                                                   None)
    assert grouped.max_ratio == GENERIC_MAX_RATIO
    blocks = expectation(Scheme("b", quantization=Quantization("bitsandbytes_nf4", backend_config_kwargs=(
        ("blocksize", 128),))))
    assert (blocks.grid, blocks.block, blocks.max_ratio) == ("4bit", 128, METHODS["bitsandbytes_nf4"].max_ratio)


# ---- honest schemes pass, with their own formats and bytes ------------------------------------------

def test_every_honest_scheme_passes_and_stores_what_its_kind_says(dits: dict[str, Any]) -> None:
    found = {scheme.id: check_scheme_applied(dits[scheme.id], scheme, "tiny") for scheme in HONEST}
    ratio = {k: v.linear_bytes()[0] / v.linear_bytes()[1] for k, v in found.items()}
    assert ratio["bf16"] == 1.0 and ratio["float8_e4m3fn"] == 0.5
    for method in ("torchao_int8_w8a16", "torchao_int8_w8a8", "torchao_fp8_w8a16"):
        assert 0.5 < ratio[method] < 0.53  # int8/float8 codes plus one float32 scale (and int8 zero point) per row
    assert 0.25 < ratio["bitsandbytes_nf4"] < 0.26  # 4-bit codes plus one uint8 absmax per 64 weights
    assert {layer.activations for layer in found["torchao_int8_w8a8"].layers} == {"int8"}
    assert all(v.formats() == {"bfloat16": 36} and ratio[k] == 1.0 for k, v in found.items() if k.endswith("-once"))


# ---- a DiT of another kind is refused --------------------------------------------------------------

@pytest.mark.parametrize("built, checked_as, message", [
    ("torchao_int8_w8a16", FP8, f"36 of the 36 targeted linear layers are not torchao_fp8_w8a16 (first: {FIRST}: "
                                "weight format expected TorchaoLinear/Float8Tensor(float8_e4m3fn), found "
                                "TorchaoLinear/Int8Tensor(int8))"),
    ("bitsandbytes_nf4", INT8, f"(first: {FIRST}: weight format expected TorchaoLinear/Int8Tensor(int8), found "
                               "BitsAndBytesLinear4bit/Params4bit(nf4); stored bytes expected 0.50-0.59x of bf16, "
                               "found 0.258x (16904 of 65536 bytes))"),
    ("torchao_int8_w8a8", INT8, f"(first: {FIRST}: activations expected left in bfloat16, found quantized to int8 "
                                "per forward)"),
    ("torchao_int8_w8a16", INT8_A8, f"(first: {FIRST}: activations expected quantized to int8 per forward, found "
                                    "left in bfloat16)"),
    ("float8_e4m3fn", REFERENCE, f"36 of the 36 linear layers are not bf16 (first: {FIRST}: weight format expected "
                                 "bfloat16, found float8_e4m3fn; stored bytes expected 1.00x of bf16, found 0.500x"),
    ("bf16", ONCE["torchao_int8_w8a16"], f"36 of the 36 targeted linear layers do not lie on the int8 grid of "
                                         f"torchao_int8_w8a16, so they were never quantized (first: {FIRST}: "
                                         "expected at least 90% of its weights on the grid, found 12.3%)"),
    ("bf16", ONCE["torchao_fp8_w8a16"], f"do not lie on the float8_e4m3fn grid of torchao_fp8_w8a16, so they were "
                                        f"never quantized (first: {FIRST}: expected at least 90%"),
    ("bf16", ONCE["bitsandbytes_nf4"], f"do not lie on the 4bit grid of bitsandbytes_nf4, so they were never "
                                       f"quantized (first: {FIRST}: expected at least 90% of its weights on the "
                                       "grid, found 0.0%)"),
    ("torchao_int8_w8a16-once", ONCE["bitsandbytes_nf4"], "do not lie on the 4bit grid of bitsandbytes_nf4"),
])
def test_a_dit_of_another_kind_is_refused_naming_layer_expected_and_found(dits: dict[str, Any], built: str,
                                                                         checked_as: Scheme, message: str) -> None:
    text = _refused(dits[built], checked_as, message)
    assert text.startswith(f"checkpoint 'tiny', scheme {checked_as.id!r} (")


def _quantized_layers(dit: Any) -> list[Any]:
    return [m for m in dit.modules() if type(m).__name__ == "TorchaoLinear"]


def _tampered(dit: Any, change: Callable[[Any], None], count: int | None = None) -> Any:
    """A deep copy of ``dit`` with ``change`` applied to its first ``count`` quantized layers."""
    tampered = copy.deepcopy(dit)
    for module in _quantized_layers(tampered)[:count]:
        change(module)
    return tampered


def _bf16_weight(module: Any) -> None:
    import torch

    module.weight = torch.nn.Parameter(module.weight.dequantize(), requires_grad=False)


def test_int8_wrappers_holding_bf16_weights_are_refused_by_format_and_bytes(dits: dict[str, Any]) -> None:
    from quant_guard.model.scheme_check import stored_bytes

    swapped = _tampered(dits["torchao_int8_w8a16"], _bf16_weight)
    assert stored_bytes(swapped) == stored_bytes(dits["bf16"])  # 3,727,232: what the old check let pass
    _refused(swapped, INT8, f"36 of the 36 targeted linear layers are not torchao_int8_w8a16 (first: {FIRST}: weight "
                            "format expected TorchaoLinear/Int8Tensor(int8), found TorchaoLinear/bfloat16; stored "
                            "bytes expected 0.50-0.59x of bf16, found 1.000x (65536 of 65536 bytes))")
    one = _tampered(dits["torchao_int8_w8a16"], _bf16_weight, count=1)
    _refused(one, INT8, f"1 of the 36 targeted linear layers are not torchao_int8_w8a16 (first: {FIRST}:")
    # a method the table does not know is still held to a quantized format that shrinks the weight
    unknown = Scheme("other", quantization=Quantization("some_other_method"))
    check_scheme_applied(dits["torchao_int8_w8a16"], unknown, "tiny")
    _refused(swapped, unknown, f"(first: {FIRST}: weight format expected a format of some_other_method, found "
                               "TorchaoLinear/bfloat16; stored bytes expected at most 0.75x of bf16, found 1.000x")


def test_fp8_weight_only_and_dynamic_activation_are_told_apart(dits: dict[str, Any]) -> None:
    from torchao.quantization.quantize_.workflows.float8.float8_tensor import QuantizeTensorToFloat8Kwargs

    def dynamic(module: Any) -> None:  # what torchao's Float8DynamicActivationFloat8WeightConfig records
        module.weight.act_quant_kwargs = QuantizeTensorToFloat8Kwargs()

    a8 = _tampered(dits["torchao_fp8_w8a16"], dynamic)
    check_scheme_applied(a8, FP8_A8, "tiny")
    _refused(a8, FP8, f"(first: {FIRST}: activations expected left in bfloat16, found quantized to float8_e4m3fn "
                      "per forward)")
    _refused(dits["torchao_fp8_w8a16"], FP8_A8, f"(first: {FIRST}: activations expected quantized to float8_e4m3fn "
                                                "per forward, found left in bfloat16)")


def test_the_reference_must_be_bf16_everywhere(dits: dict[str, Any]) -> None:
    import torch

    norm = "blocks.0.attn.norm_q_a.weight"
    tampered = copy.deepcopy(dits["bf16"])
    parameter = tampered.get_parameter(norm)
    parameter.data = parameter.data.to(torch.float8_e4m3fn)
    _refused(tampered, REFERENCE, f"1 parameters or buffers of the bf16 reference are not bfloat16 (first: {norm}: "
                                  "expected bfloat16, found float8_e4m3fn)")
    # any quantized layer in the reference is named, even a single one
    mixed = copy.deepcopy(dits["bf16"])
    mixed.x_embedder = copy.deepcopy(dits["torchao_int8_w8a16"].x_embedder)
    _refused(mixed, REFERENCE, "1 of the 36 linear layers are not bf16 (first: x_embedder: weight format expected "
                               "bfloat16, found TorchaoLinear/Int8Tensor(int8)")


def test_dequant_once_of_an_unknown_method_is_refused_for_lack_of_evidence(dits: dict[str, Any]) -> None:
    unknown = Scheme("other", quantization=Quantization("some_other_method", mode="dequant_once"))
    _refused(dits["torchao_int8_w8a16-once"], unknown, "nothing shows that some_other_method quantized these bf16 "
                                                       "layers")


def test_grid_evidence_separates_quantized_from_never_quantized_weights() -> None:
    """Short and long rows, each grid, through DiffSynth's own quantize / dequantize round trip."""
    import torch
    from diffsynth.core.quant import QuantizeConfig

    from quant_guard.model.quant_grid import on_grid_fraction

    for method in ("torchao_int8_w8a16", "torchao_fp8_w8a16", "bitsandbytes_nf4"):
        with contextlib.redirect_stdout(io.StringIO()):
            backend = QuantizeConfig(method=method).backend
        for out_features, in_features in ((64, 256), (300, 48), (16, 3072)):
            torch.manual_seed(out_features)
            layer = torch.nn.Linear(in_features, out_features, dtype=torch.bfloat16)
            raw = layer.weight.detach().clone()
            once = backend.dequantize_to_linear(backend.create_quantized_linear(layer), torch.bfloat16).weight
            grid = METHODS[method].grid
            assert grid is not None
            assert on_grid_fraction(once, grid) >= 0.99, (method, in_features)
            assert on_grid_fraction(raw, grid) < 0.3, (method, in_features)


def test_weight_format_names_packed_data() -> None:
    import torch

    assert weight_format(torch.zeros(2, dtype=torch.float8_e5m2)) == "float8_e5m2"
    assert re.fullmatch(r"\w+\(int8\)", weight_format(_int8_tensor()))


def _int8_tensor() -> Any:
    import torch
    from torchao.quantization.quantize_.workflows.int8.int8_tensor import Int8Tensor
    from torchao.quantization.granularity import PerRow

    return Int8Tensor.from_hp(torch.randn(4, 8, dtype=torch.bfloat16), granularity=PerRow())
