"""The scheme matrix of issue 29 on the embedded ``tiny`` checkpoint, through the real gate: a
throw-away pytest project whose tiny checkpoint lists DiT-only, text-encoder-only and combined
schemes; ``pytest --update-golden`` makes its bf16 goldens, then a plain ``pytest`` run checks every
scheme against them and prints the "quant_guard schemes" summary (each component's stored bytes
and savings, worst metrics, ranked), which this script prints; the HTML report lies in the
project's ``qg-report/``.

Usage: python benchmarks/component_matrix.py [--seeds 4] [--steps 8] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCHEMES = '''schemes = [
    { id = "dit-float8", storage = "float8_e4m3fn" },
    { id = "t5-float8", components = { text_encoder_t5 = "float8_e4m3fn" } },
    { id = "t5-int8", components = { text_encoder_t5 = "torchao_int8_w8a16" } },
    { id = "dit-t5-float8", components = { dit = "float8_e4m3fn", text_encoder_t5 = "float8_e4m3fn" } },
    { id = "dit-float8-t5-int8", components = { dit = "float8_e4m3fn", text_encoder_t5 = "torchao_int8_w8a16" } },
]'''
CAPTIONS = ("a red circle on a blue background at the top left",
            "a yellow triangle on a black background in the centre")


def project(seeds: int, steps: int) -> str:
    cases = "\n".join(f'''
        [[tool.quant_guard.cases]]
        id = "case{i}"
        prompt = "{caption}"
        seeds = {list(range(seeds))}
        checkpoints = ["tiny"]''' for i, caption in enumerate(CAPTIONS))
    return textwrap.dedent(f'''
        [tool.quant_guard]
        golden_dir = "golden"
        report_dir = "qg-report"

        [[tool.quant_guard.checkpoints]]
        id = "tiny"
        embedded = "tiny"
        device = "cpu"
        render = {{ steps = {steps}, size = "64x64" }}
        ''') + SCHEMES + "\n" + textwrap.dedent(cases) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=4, help="seeds per caption (two captions)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--keep", type=Path, help="write the project here (kept) instead of a temporary folder")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "pyproject.toml").write_text(project(args.seeds, args.steps), encoding="utf-8")
        (folder / "test_visual.py").write_text("def test_visual(qg_case, qg_gate):\n    qg_gate.check(qg_case)\n",
                                               encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--qg-report=all"]
        update = subprocess.run([*command, "--update-golden"], cwd=folder, env=env, capture_output=True, text=True)
        if update.returncode != 0:
            print(update.stdout[-4000:], update.stderr[-4000:])
            return update.returncode
        check = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
        lines = check.stdout.splitlines()
        start = next((i for i, line in enumerate(lines) if "quant_guard schemes" in line), None)
        print("\n".join(lines[start:] if start is not None else lines[-40:]))
        return check.returncode


if __name__ == "__main__":
    sys.exit(main())
