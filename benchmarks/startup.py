"""What installing quant_guard costs a pytest run that has no visual test.

pytest imports every installed plugin on every run, ``pytest --version`` included, so the
plugin's modules must stay light: torch, DiffSynth, LPIPS, PIL, scikit-image, numpy and jinja2
are imported only when a visual test runs. Prints:

1. wall time of ``pytest --version``, and of ``pytest --version --version`` (which, unlike a
   single ``--version`` in pytest 9, loads every installed plugin) with the plugin and with its
   two entry points disabled (``-p no:quant_guard -p no:quant_guard_report``), against a bare
   ``python -c pass``;
2. the import time of ``quant_guard.plugin`` + ``quant_guard.run.report_hooks`` after pytest itself,
   and which heavy modules they pulled in (none expected).

Run: ``.venv/bin/python benchmarks/startup.py [--repeat 15]``. Each command runs in a fresh
process from a temporary folder (no project configuration, no conftest); the commands take turns
(so a busy machine slows them alike) and the medians of the repeats are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

HEAVY = ("torch", "diffsynth", "lpips", "PIL", "skimage", "numpy", "jinja2")

IMPORT_PROBE = f"""
import json, sys, time
import pytest  # paid by every pytest run anyway
start = time.perf_counter()
import quant_guard.plugin, quant_guard.run.report_hooks
elapsed = time.perf_counter() - start
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))
print(json.dumps({{"import_s": elapsed, "heavy": heavy}}))
"""


def wall_times(commands: list[list[str]], repeat: int, cwd: str) -> list[list[float]]:
    """Wall times of each command, the commands taking turns."""
    times: list[list[float]] = [[] for _ in commands]
    for _ in range(repeat):
        for command, out in zip(commands, times):
            start = time.perf_counter()
            subprocess.run(command, cwd=cwd, check=True, capture_output=True)
            out.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="runs of each command (default 15)")
    args = parser.parse_args()
    py = sys.executable
    pytest = [py, "-m", "pytest", "-p", "no:cacheprovider"]
    disabled = ["-p", "no:quant_guard", "-p", "no:quant_guard_report"]
    rows = [
        ("python -c pass", [py, "-c", "pass"]),
        ("pytest --version", [*pytest, "--version"]),
        ("pytest --version --version (all plugins)", [*pytest, "--version", "--version"]),
        ("  same, quant_guard disabled", [*pytest, "--version", "--version", *disabled]),
    ]
    with tempfile.TemporaryDirectory() as cwd:
        for _, command in rows:
            subprocess.run(command, cwd=cwd, check=True, capture_output=True)  # warm the file cache
        times = wall_times([command for _, command in rows], args.repeat, cwd)
        print(f"{'command':<44} {'median':>9} {'min':>9}   ({args.repeat} runs each)")
        medians = []
        for (label, _), samples in zip(rows, times):
            medians.append(statistics.median(samples))
            print(f"{label:<44} {medians[-1] * 1000:>7.0f} ms {min(samples) * 1000:>6.0f} ms")
        print(f"{'=> quant_guard plugins, loaded by pytest':<44} {(medians[2] - medians[3]) * 1000:>+7.0f} ms")

        probes = [json.loads(subprocess.run([py, "-c", IMPORT_PROBE], cwd=cwd, check=True, capture_output=True,
                                            text=True).stdout) for _ in range(args.repeat)]
    import_ms = statistics.median(p["import_s"] for p in probes) * 1000
    heavy = sorted({m for p in probes for m in p["heavy"]})
    print()
    print(f"import quant_guard.plugin, quant_guard.run.report_hooks (after pytest): {import_ms:.1f} ms median")
    print(f"heavy modules imported by them ({', '.join(HEAVY)}): {', '.join(heavy) if heavy else 'none'}")
    if heavy:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
