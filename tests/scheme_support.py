"""Scheme tests' support: the tiny checkpoint built under a scheme (test_schemes.py,
test_scheme_check.py), and results.json records of a scheme matrix, hand-made: what the scheme
comparison's tests (test_report_schemes.py, test_report_browser.py) feed the report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quant_guard.model.checkpoints import ResolvedCheckpoint
    from quant_guard.config.schemes import Scheme

MiB = 2**20


def tiny_checkpoint() -> ResolvedCheckpoint:
    """The embedded tiny checkpoint, resolved for the CPU."""
    from quant_guard.model.checkpoints import resolve_checkpoint
    from quant_guard.config.project import CheckpointSpec

    return resolve_checkpoint(CheckpointSpec(id="tiny", embedded="tiny", components={}, device="cpu"))


def build(tiny: ResolvedCheckpoint, scheme: Scheme, **dits: Path) -> Any:
    """The tiny pipeline with its DiT in ``scheme`` (``dits``: a scheme's own DiT file, by scheme id);
    ``build_pipeline`` has checked the DiT against the scheme."""
    from quant_guard.model.checkpoints import ResolvedCheckpoint
    from quant_guard.model.pipelines import build_pipeline

    checkpoint = ResolvedCheckpoint(tiny.id, tiny.files, dict(dits), tiny.t5_sequence_length)
    return build_pipeline(checkpoint, scheme, "cpu")


def scheme_record(scheme: str, seed: int, lpips: Any, *, dit: float | None = MiB, checkpoint: str = "tiny",
                  passed: bool = True, ssim: Any = 0.99, psnr: Any = 40.0, steps: list[float] | None = None,
                  peak: float = 3 * MiB, start: float = 2 * MiB, **extra: Any) -> dict[str, Any]:
    """A results.json record of one (checkpoint, scheme, case, seed) test that rendered."""
    return {
        "id": f"{checkpoint}-{scheme}-circle-s{seed}", "checkpoint": checkpoint, "case": "circle", "seed": seed,
        "scheme": scheme, "scheme_description": f"{scheme} storage", "outcome": "passed" if passed else "failed",
        "passed": passed, "verdict": "passed" if passed else "image-failed", "images": {}, "checks": [],
        "metrics": {"lpips": lpips, "ssim": ssim, "psnr": psnr}, "limits": {"warmup_steps": 1},
        "candidate_render": {"step_times_s": steps or [0.5, 0.1, 0.1], "total_s": 1.0, "dit_weight_bytes": dit,
                             "memory": {"kind": "cpu-rss", "peak_bytes": peak, "at_start_bytes": start}},
        **extra,
    }


def errored(scheme: str, seed: int, checkpoint: str = "tiny") -> dict[str, Any]:
    """A test that never rendered (the scheme's backend refused): no metrics, no render."""
    return {"id": f"{checkpoint}-{scheme}-circle-s{seed}", "checkpoint": checkpoint, "case": "circle",
            "seed": seed, "scheme": scheme, "outcome": "failed", "passed": False, "verdict": "error",
            "metrics": None, "candidate_render": None, "checks": [], "images": {}, "reason": "no backend"}


def scheme_matrix() -> list[dict[str, Any]]:
    """float8 (2 seeds), nf4 (2 seeds, half the bytes, better), int4 (errored): nf4 ranks first."""
    return [scheme_record("float8_e4m3fn", seed, 0.004 + seed / 1000, dit=MiB) for seed in (0, 1)] + [
        scheme_record("nf4", seed, 0.003, dit=0.5 * MiB) for seed in (0, 1)] + [errored("int4", 0)]


T5 = "text_encoder_t5"
# the tiny checkpoint's components in bf16 (bytes): what a scheme leaving them alone stores
BF16_COMPONENTS = {"dit": 3_727_232, "text_encoder_clip": 939_136, T5: 230_272, "vae": 1_331_878}


def component_record(scheme: str, seed: int, lpips: float, *, quantized: dict[str, int],
                     **extra: Any) -> dict[str, Any]:
    """A record of a scheme that stores the components ``quantized`` (name -> stored bytes) and the
    others in bf16, with the ``scheme_spec`` results.json gives it (``components`` unless it
    quantizes the DiT alone)."""
    stored = {**BF16_COMPONENTS, **quantized}
    record = scheme_record(scheme, seed, lpips, dit=stored["dit"], **extra)
    record["candidate_render"]["component_weight_bytes"] = stored
    spec: dict[str, Any] = {"id": scheme, "storage_dtype": "float8_e4m3fn" if "dit" in quantized else "bfloat16"}
    if set(quantized) - {"dit"}:
        spec["components"] = {name: {"storage_dtype": "float8_e4m3fn"} for name in quantized}
    record["scheme_spec"] = spec
    return record


def component_matrix() -> list[dict[str, Any]]:
    """DiT-only, T5-only and both in float8 (each halves what it quantizes), one seed each."""
    half = {name: size // 2 for name, size in BF16_COMPONENTS.items()}
    return [component_record("dit-only", 0, 0.0014, quantized={"dit": half["dit"]}),
            component_record("t5-only", 0, 0.0026, quantized={T5: half[T5]}),
            component_record("both", 0, 0.0037, quantized={"dit": half["dit"], T5: half[T5]})]
