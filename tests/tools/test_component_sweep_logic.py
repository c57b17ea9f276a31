"""The component sweep's parts that need no render: the ranking by quality lost per byte saved,
the greedy recommendation, what each component is quantized with, and the printed entry read back
by the configuration's parser."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from quant_guard.config.project import CheckpointSpec, parse_scheme
from quant_guard.config.schemes import ComponentScheme, Quantization, Scheme
from quant_guard.config.thresholds import ThresholdOverrides
from quant_guard.judge.metrics import ImageMetrics
from quant_guard.tools.component_sweep import (ComponentResult, Measured, component_entry, component_plan,
                                               rank_components, recommend_components, scheme_of, sweep_target)
from quant_guard.tools.sweep import CaseMeasure, SweepError
from quant_guard.tools.sweep_text import toml_entry

MIB = 2**20


def _measured(names: tuple[str, ...], lpips: float, meets: bool = True) -> Measured:
    case = CaseMeasure("c-s0", ImageMetrics(lpips=lpips, ssim=0.99, psnr=40.0), meets, 1.0 if meets else -1.0)
    return Measured(names, (case,), {})


def _result(name: str, bf16_mib: float, saved_mib: float, lpips: float, meets: bool = True) -> ComponentResult:
    alone = _measured((name,), lpips, meets)
    quantized = int((bf16_mib - saved_mib) * MIB)
    return ComponentResult(name, int(bf16_mib * MIB), Measured(alone.components, alone.cases, {name: quantized}))


def test_the_ranking_is_quality_lost_per_byte_saved_not_bytes_or_quality_alone() -> None:
    """The T5 saves a quarter of the DiT's bytes at half its LPIPS: per byte it costs twice as
    much, so it ranks above the DiT although the DiT loses more quality and saves more bytes."""
    dit = _result("dit", 8, 4, 0.0004)
    t5 = _result("text_encoder_t5", 2, 1, 0.0002)
    clip = _result("text_encoder_clip", 2, 1, 0.00001)
    vae = _result("vae", 2, 1, 0.0020, meets=False)
    ranked = rank_components([clip, dit, vae, t5])
    assert [r.name for r in ranked] == ["vae", "text_encoder_t5", "dit", "text_encoder_clip"]
    assert t5.cost_per_gib == pytest.approx(2 * dit.cost_per_gib)


def test_a_component_that_saves_nothing_but_loses_quality_ranks_first() -> None:
    nothing = _result("vae", 1, 0, 0.001)
    assert nothing.cost_per_gib == float("inf")
    assert rank_components([_result("dit", 8, 4, 0.1), nothing])[0].name == "vae"


def test_greedy_adds_the_cheapest_per_byte_first_and_drops_what_breaks_the_set() -> None:
    ranked = rank_components([_result("dit", 8, 4, 0.0004), _result("text_encoder_t5", 2, 1, 0.0002),
                              _result("text_encoder_clip", 2, 1, 0.00001), _result("vae", 2, 1, 0.002, meets=False)])
    tried: list[tuple[str, ...]] = []

    def measure(names: tuple[str, ...]) -> Measured:
        tried.append(names)
        return _measured(names, 0.001, meets="text_encoder_t5" not in names)  # the T5 tips the set over

    rec = recommend_components(ranked, measure, lambda names: {"components": list(names)})
    # the CLIP alone was measured already; the VAE misses alone, so it is never tried with others
    assert tried == [("text_encoder_clip", "dit"), ("text_encoder_clip", "dit", "text_encoder_t5")]
    assert rec.components == ("text_encoder_clip", "dit")
    assert rec.saved_bytes == 5 * MIB
    assert rec.entry == {"components": ["text_encoder_clip", "dit"]}
    assert rec.note == ("left in bf16: text_encoder_t5 (misses it with text_encoder_clip+dit), "
                        "vae (misses the target alone)")


def test_no_component_meeting_the_target_alone_recommends_none() -> None:
    ranked = rank_components([_result("dit", 8, 4, 0.1, meets=False), _result("vae", 2, 1, 0.1, meets=False)])
    rec = recommend_components(ranked, lambda names: pytest.fail("nothing to combine"),  # type: ignore[arg-type]
                               lambda names: {})
    assert rec.components == () and rec.entry is None and "keep the bf16 reference" in rec.note


def _spec(schemes: tuple[Scheme, ...], family: str = "flux") -> CheckpointSpec:
    return CheckpointSpec(id="c", embedded=None, components={}, family=family, schemes=schemes)


def test_a_storage_dtype_or_method_applies_to_every_component_a_component_scheme_to_its_own() -> None:
    from quant_guard.config.sources import ComponentSource

    assert component_plan(_spec(()), "float8_e4m3fn") == {
        name: ComponentScheme("float8_e4m3fn") for name in ("dit", "text_encoder_clip", "text_encoder_t5", "vae")}
    int8 = ComponentScheme(quantization=Quantization("torchao_int8_w8a16"))
    assert component_plan(_spec((), "qwen-image"), "torchao_int8_w8a16") == {
        "dit": int8, "text_encoder": int8, "vae": int8}
    a14b = CheckpointSpec(id="c", embedded=None, components={"dit2": ComponentSource(path=Path("low.safetensors"))},
                          family="wan")  # Wan2.2's second DiT follows the DiT: no variant of its own
    assert component_plan(a14b, "torchao_int8_w8a16") == {"dit": int8, "text_encoder": int8, "vae": int8}
    mixed = Scheme("mixed", storage_dtype="float8_e4m3fn", others=(("text_encoder_t5", int8),))
    assert component_plan(_spec((mixed,)), "mixed") == {"dit": ComponentScheme("float8_e4m3fn"),
                                                         "text_encoder_t5": int8}
    own_dit = Scheme("own", storage_dtype="float8_e4m3fn", dit=ComponentSource(path=Path("dit-f8.safetensors")))
    own_t5 = Scheme("own-t5", others=(("text_encoder_t5", ComponentScheme(
        "float8_e4m3fn", file=ComponentSource(path=Path("t5-f8.safetensors")))),))
    with pytest.raises(SweepError, match="scheme 'own': its own DiT file is that scheme's alone"):
        component_plan(_spec((own_dit,)), "own")
    with pytest.raises(SweepError, match="scheme 'own-t5': its own text_encoder_t5 file is that scheme's alone"):
        component_plan(_spec((own_t5,)), "own-t5")


@pytest.mark.parametrize("family, names", [("flux", ("text_encoder_clip", "dit", "text_encoder_t5")),
                                           ("z-image", ("text_encoder", "vae"))])
def test_the_printed_entry_reads_back_as_the_measured_scheme(tmp_path: Path, family: str,
                                                             names: tuple[str, ...]) -> None:
    plan = {"dit": ComponentScheme("float8_e4m3fn"),
            "text_encoder_clip": ComponentScheme("float8_e4m3fn"),
            "text_encoder_t5": ComponentScheme(quantization=Quantization("torchao_int8_w8a16")),
            "text_encoder": ComponentScheme(quantization=Quantization("torchao_int8_w8a16",
                                                                      exclude_modules=("lm_head",))),
            "vae": ComponentScheme("float8_e5m2")}
    entry = component_entry("x-components", plan, names, ThresholdOverrides(psnr=38.0))
    line = toml_entry(entry)
    assert line.count("\n") == 0 and "components = {" in line  # one line to paste
    parsed = parse_scheme(tomllib.loads(f"s = {line.rstrip(',')}")["s"], file=tmp_path / "pyproject.toml",
                          where="w", key="k", family=family)
    measured = scheme_of("x-components", plan, names)
    assert parsed.targets == measured.targets and parsed.id == "x-components"
    assert all(parsed.component(n) == measured.component(n) for n in (*names, "dit"))
    assert parsed.thresholds == ThresholdOverrides(psnr=38.0)


def test_a_configured_schemes_own_thresholds_hold_under_the_commands_target() -> None:
    strict = Scheme("strict", storage_dtype="float8_e4m3fn", thresholds=ThresholdOverrides(lpips=0.01, ssim=0.99))
    assert sweep_target(_spec((strict,)), "strict", ThresholdOverrides(psnr=40.0)) == ThresholdOverrides(
        lpips=0.01, ssim=0.99, psnr=40.0)
    assert sweep_target(_spec((strict,)), "strict", ThresholdOverrides(lpips=0.02)).lpips == 0.02  # the command wins
    assert sweep_target(_spec((strict,)), "float8_e4m3fn", ThresholdOverrides()) == ThresholdOverrides()
