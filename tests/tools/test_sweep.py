"""The sensitivity sweep end to end on a tiny DiT with one deliberately fragile block:
``quant-guard sweep`` must rank that block first, recommend keeping it in bf16, print a scheme
entry that the gate then passes, and say so plainly when nothing is needed or nothing helps."""

from __future__ import annotations

import contextlib
import io
import json
import re
import textwrap
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import REAL_CACHE, VISUAL_TEST, components_toml, fragile_dit, project_toml, tree_digest

from quant_guard.cli import main
from quant_guard.config.project import parse_scheme
from quant_guard.store.paths import CACHE_ENV

CHECKPOINT = """
[tool.quant_guard]
golden_dir = "{golden}"
report_dir = "qg-report"

[[tool.quant_guard.checkpoints]]
id = "fragile"
device = "cpu"
t5_sequence_length = 16
render = {{ steps = 4, size = "64x64" }}
schemes = [
  "bitsandbytes_nf4",
  {{ id = "nf4-singles", method = "bitsandbytes_nf4", target_modules = ["single_blocks.0.to_qkv_mlp", "single_blocks.1.to_qkv_mlp"] }},
  {{ id = "nf4-edges", method = "bitsandbytes_nf4", target_modules = ["x_embedder", "final_proj_out"] }},
  {extra_scheme}
]
[tool.quant_guard.checkpoints.components]
{components}

[[tool.quant_guard.cases]]
id = "red-circle"
prompt = "{prompt}"
seeds = [0]
"""
PROMPT = "a red circle on a blue background at the top left"
BLOCK0 = [f"blocks.0.{n}" for n in ("norm1_a.linear", "norm1_b.linear", "attn.a_to_qkv", "attn.b_to_qkv",
                                    "attn.a_to_out", "attn.b_to_out", "ff_a.0", "ff_a.2", "ff_b.0", "ff_b.2")]


@dataclass(frozen=True)
class CliRun:
    code: int
    out: str
    err: str
    builds: int  # whole pipelines built
    swaps: list[str]  # the scheme of each DiT swapped in

    def report(self, project: Path, scheme: str, checkpoint: str = "fragile") -> dict[str, Any]:
        return json.loads((project / "qg-report" / "sweep" / f"{checkpoint}-{scheme}" / "sweep.json").read_text())


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``project(prompt=..., extra_scheme=...)``: the folder of a configuration whose checkpoint
    "fragile" is the tiny one with joint block 0 made fragile for NF4 (``helpers.fragile_dit``);
    every configuration shares the module's golden folder."""
    from quant_guard.model.tiny.build import ensure_tiny_checkpoint

    root = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(REAL_CACHE))
        files = dict(ensure_tiny_checkpoint().components())
    files["dit"] = fragile_dit(files["dit"], root / "dit-fragile.safetensors", block=0)

    def make(folder: str = "main", *, prompt: str = PROMPT, extra_scheme: str = "") -> Path:
        path = root / folder
        path.mkdir(exist_ok=True)
        (path / "pyproject.toml").write_text(CHECKPOINT.format(
            golden=(root / "golden").as_posix(), components=components_toml(files), prompt=prompt,
            extra_scheme=extra_scheme))
        return path

    return make


def sweep_cli(project: Path, *args: str, checkpoint: str = "fragile") -> CliRun:
    """``quant-guard sweep --checkpoint CHECKPOINT ARGS`` in this process, counting pipeline builds and DiT swaps."""
    from quant_guard.model import pipelines

    build, swap = pipelines.build_pipeline, pipelines.swap_components
    counts: dict[str, Any] = {"builds": 0, "swaps": []}

    def counting_build(*a: Any, **k: Any) -> Any:
        counts["builds"] += 1
        return build(*a, **k)

    def counting_swap(pipe: Any, checkpoint: Any, scheme: Any, plan: Any, names: tuple[str, ...]) -> None:
        assert names == ("dit",)  # a sweep's variants differ in their DiT only
        counts["swaps"].append(scheme.id)
        swap(pipe, checkpoint, scheme, plan, names)

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        mp.setenv(CACHE_ENV, str(REAL_CACHE))
        mp.setattr(pipelines, "build_pipeline", counting_build)
        mp.setattr(pipelines, "swap_components", counting_swap)
        code = main(["sweep", "--checkpoint", checkpoint, "--config", str(project / "pyproject.toml"), *args])
    return CliRun(code, out.getvalue(), err.getvalue(), counts["builds"], counts["swaps"])


@pytest.fixture(scope="module")
def fragile(project: Callable[..., Path]) -> Iterator[tuple[Path, CliRun]]:
    """The sweep of the fragile checkpoint with NF4 against its configured thresholds (the
    package defaults: LPIPS 0.1, SSIM 0.85, PSNR 22 dB); its golden is rendered by the sweep."""
    folder = project()
    yield folder, sweep_cli(folder, "--scheme", "bitsandbytes_nf4")


def test_the_sweep_ranks_the_fragile_block_first_and_keeps_it_in_bf16(fragile: tuple[Path, CliRun]) -> None:
    folder, run = fragile
    assert run.code == 0, run.err
    doc = run.report(folder, "bitsandbytes_nf4")
    assert doc["goldens_created"] == 1
    assert not doc["full"]["meets"]
    groups = doc["groups"]
    assert [g["name"] for g in groups][0] == "blocks.0"
    assert sorted(g["name"] for g in groups) == ["blocks.0", "blocks.1", "embedders", "final", "single_blocks.0",
                                                 "single_blocks.1"]
    assert groups[0]["kept"]["meets"] and not any(g["kept"]["meets"] for g in groups[1:])
    # quantized alone, the fragile block is also the one that does the damage
    assert min(groups, key=lambda g: g["alone"]["margin"])["name"] == "blocks.0"
    rec = doc["recommendation"]
    assert rec["answer"] == "keep" and rec["search"] == "greedy" and rec["groups"] == ["blocks.0"]
    assert rec["exclude_modules"] == BLOCK0 and rec["skip_modules_pattern"] == [r"^transformer_blocks\.0$"]


def test_the_recommended_scheme_meets_the_target_it_was_computed_for(fragile: tuple[Path, CliRun]) -> None:
    folder, run = fragile
    doc = run.report(folder, "bitsandbytes_nf4")
    confirm, full, block0 = doc["recommendation"]["confirm"], doc["full"], doc["groups"][0]
    target = doc["cases"][0]["target"]
    assert target == {"lpips_max": 0.1, "ssim_min": 0.85, "psnr_min": 22.0}
    assert confirm["meets"] and confirm["failing"] == 0 and doc["recommendation"]["confirmed"]
    worst = confirm["worst"]
    assert worst["lpips"] <= target["lpips_max"] and worst["ssim"] >= target["ssim_min"]
    assert worst["psnr"] >= target["psnr_min"]
    # its DiT stores exactly the group's extra bytes more than the fully quantized one
    assert confirm["stored_bytes"] - full["stored_bytes"] == block0["extra_bytes"] > 0
    assert block0["bf16_bytes"] > block0["quantized_bytes"] > 0


def test_every_variant_is_one_dit_swap_in_one_pipeline(fragile: tuple[Path, CliRun]) -> None:
    _, run = fragile
    # the bf16 golden built the pipeline; each variant then swapped in its DiT, the text encoders stayed
    assert run.builds == 1
    assert len(run.swaps) == 1 + 2 * 6 + 1 == len(set(run.swaps))
    assert run.swaps[0] == "bitsandbytes_nf4 (fully quantized)" and run.swaps[-1] == "bitsandbytes_nf4 (confirming run)"


def test_the_command_prints_the_table_the_entry_the_exclude_list_and_the_pattern(
        fragile: tuple[Path, CliRun]) -> None:
    folder, run = fragile
    out = run.out
    assert "sensitivity sweep: checkpoint fragile, scheme bitsandbytes_nf4" in out
    assert "fully quantized: DiT " in out and "misses the target on 1 of 1 cases" in out
    rows = [line.split() for line in out.splitlines() if re.match(r"\s+\d+\s+\S+\s+\d+\s", line)]
    assert [r[1] for r in rows][0] == "blocks.0" and len(rows) == 6 and rows[0][-4] == "yes"  # kept in bf16: meets
    assert "recommendation (greedy search, cheapest first; not exhaustive): keep 1 group in bf16: blocks.0" in out
    assert "confirming run of the mixed scheme: " in out and "meets the target on every case" in out
    # the scheme entry, pasted into a schemes list, is what the configuration parser reads
    entry_text = out.split("schemes list of checkpoint 'fragile'\n", 1)[1].split("\n\n", 1)[0]
    entry = tomllib.loads(f"schemes = [\n{entry_text}\n]")["schemes"][0]
    scheme = parse_scheme(entry, file=folder / "pyproject.toml", where="test", key="entry")
    assert scheme.id == "bitsandbytes_nf4-mixed" and scheme.quantization is not None
    assert scheme.quantization.method == "bitsandbytes_nf4" and list(scheme.quantization.exclude_modules) == BLOCK0
    lines = out.splitlines()
    exclude = lines[lines.index("DiffSynth QuantizeConfig(exclude_modules=...):") + 1]
    assert json.loads(exclude) == BLOCK0
    pattern = lines[lines.index("diffusers skip_modules_pattern (FluxTransformer2DModel module names):") + 1]
    assert pattern.strip() == r'(r"^transformer_blocks\.0$",)'
    assert "sweep/fragile-bitsandbytes_nf4/sweep.json" in out
    # a progress line per variant on stderr
    assert "[1/14] fully quantized: worst PSNR" in run.err and "[14/14] confirming run: " in run.err


def test_the_printed_entry_passes_the_gate_where_the_fully_quantized_scheme_fails(
        fragile: tuple[Path, CliRun], project: Callable[..., Path], pytester: pytest.Pytester,
        _heavy_modules: None) -> None:
    import bitsandbytes  # noqa: F401  # in this process first: its torch ops cannot be registered twice

    folder, run = fragile
    entry_text = run.out.split("schemes list of checkpoint 'fragile'\n", 1)[1].split("\n\n", 1)[0]
    config = (project("gate", extra_scheme=textwrap.dedent(entry_text)) / "pyproject.toml").read_text()
    pytester.makefile(".toml", pyproject=config)
    pytester.makepyfile(test_visual=VISUAL_TEST)
    result = pytester.runpytest("-v", "-k", "bitsandbytes_nf4-red or bitsandbytes_nf4-mixed")
    result.assert_outcomes(passed=1, failed=1, deselected=2)
    result.stdout.fnmatch_lines(["*test_visual[[]fragile-bitsandbytes_nf4-red-circle-s0[]] FAILED*",
                                 "*test_visual[[]fragile-bitsandbytes_nf4-mixed-red-circle-s0[]] PASSED*"])


def test_a_scheme_that_meets_the_target_needs_no_group_and_goldens_are_not_rewritten(
        fragile: tuple[Path, CliRun], project: Callable[..., Path]) -> None:
    folder, _ = fragile
    goldens = tree_digest(folder.parent / "golden")
    run = sweep_cli(folder, "--scheme", "nf4-singles")
    assert run.code == 0, run.err
    assert ("recommendation: none needed: the fully quantized nf4-singles scheme already meets the target on every "
            "case; no group has to stay in bf16") in run.out
    assert "groups not measured" in run.out
    doc = run.report(folder, "nf4-singles")
    assert doc["recommendation"]["answer"] == "already-meets" and doc["groups"] == []
    assert "[1/1] fully quantized: " in run.err and "ETA" not in run.err
    # the golden was there: the one pipeline is built with the only DiT needed
    assert doc["goldens_created"] == 0 and run.builds == 1 and run.swaps == []
    assert tree_digest(folder.parent / "golden") == goldens


def test_no_subset_reaching_the_target_is_said_plainly(fragile: tuple[Path, CliRun]) -> None:
    folder, _ = fragile
    run = sweep_cli(folder, "--scheme", "nf4-edges", "--target-psnr", "100")
    assert run.code == 3, run.err
    assert "recommendation: no subset of the 2 groups reaches the target (greedy search)" in run.out
    assert "scheme entry" not in run.out
    doc = run.report(folder, "nf4-edges")
    assert doc["recommendation"]["answer"] == "no-subset" and doc["recommendation"]["confirm"] is None
    assert [g["name"] for g in doc["groups"]] != [] and doc["cases"][0]["target"]["psnr_min"] == 100.0


def test_a_stale_golden_stops_the_sweep_and_stays(fragile: tuple[Path, CliRun], project: Callable[..., Path]) -> None:
    folder, _ = fragile
    goldens = tree_digest(folder.parent / "golden")
    run = sweep_cli(project("stale", prompt="a blue square"), "--scheme", "bitsandbytes_nf4")
    assert run.code == 1 and run.swaps == [] and run.builds == 0
    assert "is stale, made with other parameters" in run.err and "pytest --update-golden" in run.err
    assert tree_digest(folder.parent / "golden") == goldens


def test_unknown_cases_seeds_and_schemes_are_clear_errors(project: Callable[..., Path]) -> None:
    folder = project("errors")
    for args, message in ((["--scheme", "bitsandbytes_nf4", "--case", "nope"], "has no case 'nope'; its cases: red-circle"),
                          (["--scheme", "bitsandbytes_nf4", "--seed", "7"], "seed 7 is not configured"),
                          (["--scheme", "float8_e4m3fn"], "is a storage scheme")):
        run = sweep_cli(folder, *args)
        assert run.code == 1 and message in run.err and run.builds == 0


def test_the_page_shows_bars_the_recommendation_and_the_worst_case(fragile: tuple[Path, CliRun], browser: Any) -> None:
    from report_browser import ReportPage

    folder, _ = fragile
    page = folder / "qg-report" / "sweep" / "fragile-bitsandbytes_nf4" / "sweep.html"
    html = page.read_text()
    assert html.count('<rect class="kept"') == 6 and html.count('<rect class="alone"') == 6
    assert "Keep <strong>blocks.0</strong> in bf16" in html and "greedy search" in html
    assert "bitsandbytes_nf4-mixed" in html and r"^transformer_blocks\.0$" in html
    for image in ("golden.png", "before.png", "after.png"):
        assert (page.parent / image).is_file() and f'src="{image}"' in html
    report = ReportPage.open(browser, page)
    assert report.problems == [] and report.foreign_requests() == [] and report.broken_images() == []
    assert report.overflow()["wide"] == []


QG_SWEEP_TEST = '''
def test_sweep(qg_sweep):
    result = qg_sweep("tiny", "bitsandbytes_nf4", cases=["red-circle"], seeds=[0])
    assert result.recommendation.answer.value == "already-meets", result.recommendation
    assert result.goldens_created == 1 and (result.folder / "sweep.json").is_file()
    assert (result.folder / "sweep.html").is_file()
'''


def test_a_test_runs_the_sweep_with_the_qg_sweep_fixture(pytester: pytest.Pytester, _heavy_modules: None) -> None:
    import bitsandbytes  # noqa: F401  # in this process first: its torch ops cannot be registered twice
    pytester.makefile(".toml", pyproject=project_toml())
    pytester.makepyfile(test_layers_to_keep=QG_SWEEP_TEST)
    pytester.runpytest().assert_outcomes(passed=1)
    assert (pytester.path / "golden" / "tiny" / "red-circle-s0.png").is_file()
    assert (pytester.path / "qg-report" / "sweep" / "tiny-bitsandbytes_nf4" / "sweep.json").is_file()



Z_IMAGE = """
[tool.quant_guard]
golden_dir = "golden"
report_dir = "qg-report"

[[tool.quant_guard.checkpoints]]
id = "z-image"
embedded = "tiny-z-image"
device = "cpu"
render = { steps = 2, size = "64x64" }
schemes = ["torchao_int8_w8a16"]

[[tool.quant_guard.cases]]
id = "red-circle"
prompt = "a red circle on a blue background at the top left"
seeds = [0]
"""


def test_the_sweep_runs_on_another_familys_tiny_with_its_block_groups(tmp_path: Path) -> None:
    """``quant-guard sweep`` on the tiny Z-Image (int8: the tiny's 341-wide MLP has no NF4 CPU
    kernel): one pipeline, one DiT swap per variant, and the groups are Z-Image's block lists (its
    main layers and both refiners), embedders and final layer. A PSNR of 100 dB is out of reach, so
    every group is measured and the answer is said plainly."""
    (tmp_path / "pyproject.toml").write_text(Z_IMAGE)
    run = sweep_cli(tmp_path, "--scheme", "torchao_int8_w8a16", "--target-psnr", "100", checkpoint="z-image")
    assert run.code == 3, run.err
    doc = run.report(tmp_path, "torchao_int8_w8a16", checkpoint="z-image")
    assert doc["goldens_created"] == 1 and run.builds == 1
    assert sorted((g["name"], g["kind"], len(g["layers"])) for g in doc["groups"]) == [
        ("context_refiner.0", "text refiner", 7), ("embedders", "embedders", 4), ("final", "final layer", 2),
        ("layers.0", "block", 8), ("layers.1", "block", 8), ("layers.2", "block", 8),
        ("noise_refiner.0", "image refiner", 8)]
    assert run.swaps[0] == "torchao_int8_w8a16 (fully quantized)" and len(run.swaps) >= 1 + 2 * 7
    assert doc["recommendation"]["answer"] == "no-subset"
    assert "recommendation: no subset of the 7 groups reaches the target (greedy search)" in run.out
