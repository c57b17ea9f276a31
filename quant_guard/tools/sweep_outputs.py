"""The sweep as ``quant-guard sweep`` and the ``qg_sweep`` fixture run it: measure
(``tools.sweep``), then write sweep.json, sweep.html (``tools.sweep_page``) and the worst case's
images under the report directory."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from quant_guard.config.thresholds import ThresholdOverrides
from quant_guard.tools.sweep import SWEEP_FOLDER, SweepResult, run_sweep

if TYPE_CHECKING:
    from quant_guard.run.session import QuantGuardSession


def write_sweep(result: SweepResult, report_dir: Path) -> SweepResult:
    """sweep.json, sweep.html and the worst case's images under ``report_dir/sweep/<checkpoint>-<scheme>/``."""
    import json

    from quant_guard.store.atomic import atomic_write
    from quant_guard.store.golden import encode_png
    from quant_guard.tools.sweep_page import write_sweep_page

    folder = report_dir / SWEEP_FOLDER / f"{result.checkpoint}-{result.scheme.id}"
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in result.images.items():
        atomic_write(folder / f"{name}.png", encode_png(image))
    document = result.as_dict()
    atomic_write(folder / "sweep.json", (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode())
    write_sweep_page(folder, document)
    return replace(result, folder=folder)


def sweep_checkpoint(session: QuantGuardSession, checkpoint: str, scheme: str, *, granularity: str = "block",
                     cases: tuple[str, ...] | list[str] = (), seeds: tuple[int, ...] | list[int] = (),
                     target_lpips: float | None = None, target_ssim: float | None = None,
                     target_psnr: float | None = None) -> SweepResult:
    """Run the sweep and write its outputs under the session's report directory: what
    ``quant-guard sweep`` and the ``qg_sweep`` fixture call. Targets default to each case's
    configured thresholds for the scheme."""
    target = ThresholdOverrides(lpips=target_lpips, ssim=target_ssim, psnr=target_psnr)
    result = run_sweep(session, checkpoint, scheme, granularity=granularity, cases=tuple(cases),
                       seeds=tuple(seeds), target=target)
    return write_sweep(result, session.report_dir)
