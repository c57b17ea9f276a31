"""A demo project for the report: the embedded tiny checkpoint with its honest float8 candidate,
and the same checkpoint with a damaged candidate DiT (a broken quantizer: every weight matrix
rounded to a few levels), so a run has passing and failing cases side by side.

Used by the report's own tests and to make ``docs/report.png``:

    python -m quant_guard.tools.report_demo /tmp/qg-demo          # golden update, then a checked run
    python tests/report_browser.py /tmp/qg-demo/qg-report --first-case --screenshot docs/report.png
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

HOSTILE_PROMPT = "<script>window.__qg_pwned = 1</script> a yellow triangle on a black background"
DAMAGED_DIT = "dit-damaged.safetensors"
# A basename of its own: in-process pytester runs clash with an already imported "test_visual"
TEST_FILE = "test_qg_report_demo.py"
VISUAL_TEST = "def test_visual(qg_case, qg_gate):\n    qg_gate.check(qg_case)\n"


def demo_toml(*, hostile_case: bool, seeds: str = "[0, 1]", levels: int = 5) -> str:
    """pyproject.toml of the demo: checkpoints ``tiny`` and ``tiny-damaged``."""
    hostile = textwrap.dedent(f"""
        [[tool.quant_guard.cases]]
        id = "hostile-prompt"
        prompt = "{HOSTILE_PROMPT}"
        seeds = [0]
        checkpoints = ["tiny-damaged"]
        """) if hostile_case else ""
    return textwrap.dedent(f"""
        # quant_guard report demo (ROUND damage, {levels} levels)
        [tool.quant_guard]
        golden_dir = "golden"
        report_dir = "qg-report"

        [[tool.quant_guard.checkpoints]]
        id = "tiny"
        embedded = "tiny"
        device = "cpu"
        render = {{ steps = 8, size = "64x64" }}

        [[tool.quant_guard.checkpoints]]
        id = "tiny-damaged"
        embedded = "tiny"
        device = "cpu"
        render = {{ steps = 8, size = "64x64" }}
        candidate = {{ dit = "{DAMAGED_DIT}" }}

        [[tool.quant_guard.cases]]
        id = "red-circle-blue"
        prompt = "a red circle on a blue background at the top left"
        seeds = {seeds}
        """) + hostile


def write_demo(root: Path, *, hostile_case: bool = False, levels: int = 5) -> Path:
    """Write the project (configuration, visual test, damaged DiT) into ``root``."""
    from safetensors.torch import load_file, save_file

    from quant_guard.tools.degrade import Degradation, degrade
    from quant_guard.model.tiny.build import ensure_tiny_checkpoint

    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(demo_toml(hostile_case=hostile_case, levels=levels), encoding="utf-8")
    (root / TEST_FILE).write_text(VISUAL_TEST, encoding="utf-8")
    damaged = degrade(load_file(str(ensure_tiny_checkpoint().dit)), Degradation.ROUND, strength=levels)
    save_file({k: v.contiguous() for k, v in damaged.items()}, str(root / DAMAGED_DIT))
    return root


def run_pytest(root: Path, *args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    """``python -m pytest`` in ``root`` in a fresh process (its own torch, its own plugins)."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_XDIST_WORKER", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args], cwd=root,
                          env=env, capture_output=True, text=True, timeout=timeout_s, check=False)


def make_demo_report(root: Path, *args: str, hostile_case: bool = False) -> subprocess.CompletedProcess[str]:
    """Write the demo, make its goldens, then run the check (``args`` added); returns that run."""
    write_demo(root, hostile_case=hostile_case)
    update = run_pytest(root, "--update-golden", "--qg-report=none")
    if "goldens" not in update.stdout:
        raise RuntimeError(f"golden update of the demo failed:\n{update.stdout}\n{update.stderr}")
    return run_pytest(root, *args)


def shared_demo_report(base: Path) -> tuple[Path, int, str]:
    """The demo with a hostile prompt, made and checked once per ``base`` folder (a test
    session's temporary root): (project root, exit status, output) of the checked run. The
    check runs with ``--html`` (pytest-html) and, when pytest-xdist is installed, on 2 workers."""
    import importlib.util

    root = base / "qg-report-demo"
    marker = root / "check-run.json"
    if not marker.is_file():
        xdist = ["-n", "2"] if importlib.util.find_spec("xdist") else []
        run = make_demo_report(root, "--html=report.html", *xdist, hostile_case=True)
        marker.write_text(json.dumps({"returncode": run.returncode, "stdout": run.stdout, "stderr": run.stderr}),
                          encoding="utf-8")
    data = json.loads(marker.read_text(encoding="utf-8"))
    return root, int(data["returncode"]), str(data["stdout"]) + str(data["stderr"])


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "qg-demo").resolve()
    run = make_demo_report(target)
    print(run.stdout[-3000:])
    print(f"report: {target / 'qg-report' / 'index.html'}")
