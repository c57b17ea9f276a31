"""``quant-guard sweep --groups components`` on embedded tinies: every model component quantized
alone, each swap loading that component only, ranked by quality lost per byte saved, and the
printed ``components = {...}`` entry passing the gate the sweep computed it for."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from helpers import REAL_CACHE

from quant_guard.cli import main
from quant_guard.store.paths import CACHE_ENV

CONFIG = """\
[tool.quant_guard]
golden_dir = "{golden}"
report_dir = "qg-report"

[[tool.quant_guard.checkpoints]]
id = "{embedded}"
embedded = "{embedded}"
device = "cpu"
render = {{ steps = 3, size = "64x64" }}
schemes = ["float8_e4m3fn"]

[[tool.quant_guard.cases]]
id = "circle"
prompt = "a red circle on a blue background at the top left"
seeds = [0]
"""


def _sweep(root: Path, embedded: str, *args: str) -> tuple[int, str, list[tuple[str, ...]]]:
    """The command in this process: (exit status, stdout, the components of each swap)."""
    from quant_guard.model import pipelines

    (root / "pyproject.toml").write_text(CONFIG.format(golden=(root / "golden").as_posix(), embedded=embedded))
    swap, swaps = pipelines.swap_components, []

    def counting(pipe: Any, checkpoint: Any, scheme: Any, plan: Any, names: tuple[str, ...]) -> None:
        swaps.append(names)
        swap(pipe, checkpoint, scheme, plan, names)

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        mp.setenv(CACHE_ENV, str(REAL_CACHE))
        mp.chdir(root)
        mp.setattr(pipelines, "swap_components", counting)
        code = main(["sweep", "--config", str(root / "pyproject.toml"), "--checkpoint", embedded,
                     "--groups", "components", *args])
    return code, out.getvalue(), swaps


@pytest.mark.slow  # a whole sweep through the command: 20-40 s each on 2 CPU cores
@pytest.mark.parametrize("embedded", ["tiny", "tiny-z-image"])
def test_each_component_alone_then_the_cheapest_set_printed_as_a_component_scheme(tmp_path: Path,
                                                                                   embedded: str) -> None:
    from quant_guard.model.families import embedded_family

    components = embedded_family(embedded).model_components
    code, out, swaps = _sweep(tmp_path, embedded, "--scheme", "float8_e4m3fn", "--target-psnr", "40")
    sweep = json.loads((tmp_path / "qg-report" / "sweep" / f"{embedded}-float8_e4m3fn-components" /
                        "sweep.json").read_text())
    ranked = sweep["ranked"]
    assert sorted(r["component"] for r in ranked) == sorted(components)
    for r in ranked:  # float8 storage halves each component (Qwen3's norms stay bf16); the others stay as they were
        assert r["bf16_bytes"] == sweep["reference_bytes"][r["component"]]
        assert abs(r["quantized_bytes"] * 2 - r["bf16_bytes"]) <= 0.001 * r["bf16_bytes"], r
        assert {k: v for k, v in r["alone"]["stored_bytes"].items() if k != r["component"]} == {
            k: v for k, v in sweep["reference_bytes"].items() if k != r["component"]}
    per_gib = [r["cost_per_gib"] for r in ranked]
    assert per_gib == sorted(per_gib, reverse=True)
    # one component at a time: each swap loads the component measured next and puts the last one back
    assert [set(s) for s in swaps[:len(components)]] == [
        {c} if i == 0 else {components[i - 1], c} for i, c in enumerate(components)]
    rec = sweep["recommendation"]
    assert code == 0 and rec["entry"] is not None, out
    chosen = rec["components"]
    cheapest_first = [r["component"] for r in reversed(ranked) if r["alone"]["meets"]]
    assert chosen[0] == cheapest_first[0]
    assert set(chosen) <= set(cheapest_first)  # never a component that misses alone
    line = next(line.strip() for line in out.splitlines() if line.strip().startswith("{ id = "))
    assert line.startswith('{ id = "float8_e4m3fn-components", components = { ') and \
        all(f'{c} = "float8_e4m3fn"' in line for c in chosen)
    assert "components ranked by quality lost per byte saved" in out
