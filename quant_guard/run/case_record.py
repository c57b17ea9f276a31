"""The results.json record of one visual test, built where the test ran (the only process or an
xdist worker) from its ``CaseResult`` and the session's golden store and checkpoints.

A record is the test's identity (checkpoint, case, seed, prompt, scheme, render settings,
limits), then every field of its ``CaseResult`` serialized generically (so fields added to
``CaseResult`` later appear without changes here), then the environment it ran in and the
golden's sidecar. Paths are relative to the report directory where possible; the golden PNG
is copied beside the candidate so the report folder is self-contained.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quant_guard.report.records import GOLDEN_COPY, relative_path, to_jsonable

if TYPE_CHECKING:
    from quant_guard.config.project import CheckpointSpec
    from quant_guard.run.cases import CaseResult
    from quant_guard.run.session import QuantGuardSession


def build_record(result: CaseResult, session: QuantGuardSession, *, nodeid: str, outcome: str,
                 duration_s: float, worker: str | None, environment: dict[str, Any]) -> dict[str, Any]:
    """The results.json record of one visual test (JSON types only: it crosses to the xdist controller)."""
    vc, base = result.case, session.report_dir
    record: dict[str, Any] = {
        "nodeid": nodeid, "outcome": outcome, "duration_s": round(duration_s, 4), "worker": worker,
        "id": vc.id, "checkpoint": vc.checkpoint.id, "case": vc.case.id, "seed": vc.seed,
        "prompt": vc.case.prompt, "scheme": vc.scheme.id,
        "scheme_spec": vc.scheme.as_dict(), "scheme_description": vc.scheme.describe(),
        "render": {"steps": vc.steps, "width": vc.width, "height": vc.height, "guidance": vc.guidance,
                   **({"frames": vc.frames, "fps": vc.fps} if vc.frames > 1 else {})},
        "limits": to_jsonable(vc.checkpoint.limits),
    }
    for f in dataclasses.fields(result):
        if f.name != "case":
            record[f.name] = to_jsonable(getattr(result, f.name), base=base)
    record["passed"] = result.passed
    golden = result.images.get("golden") or session.store.png_path(vc.key)
    record["golden_source"] = relative_path(golden, None)
    record["golden"] = _read_sidecar(golden.with_suffix(".json"))
    record["baseline_id"] = session.store.baseline_id(vc.key, vc.expected_name)  # re-baselines, for the history
    copied = _copy_golden(golden, result.images.get("candidate"))
    if copied is not None:
        record.setdefault("images", {})["golden"] = relative_path(copied, base)
    record["environment"] = environment
    return to_jsonable(record)  # JSON types only, whatever the sidecar or environment held


def _copy_golden(golden: Path, candidate: Path | None) -> Path | None:
    """The golden PNG beside the candidate (the report folder then opens anywhere)."""
    if candidate is None or not golden.is_file() or not candidate.parent.is_dir():
        return None
    target = candidate.parent / GOLDEN_COPY
    shutil.copyfile(golden, target)
    return target


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def environment(session: QuantGuardSession, spec: CheckpointSpec) -> dict[str, Any]:
    """Where a checkpoint's cases ran: device, library versions and the checkpoint's file hashes.
    Never raises: a report must not break the run it describes."""
    env: dict[str, Any] = {}
    try:
        from quant_guard.store.fingerprint import environment as gate_environment

        env = gate_environment(session.device(spec))
        env.pop("created", None)
    except Exception as exc:  # torch/diffsynth missing or broken: say so instead
        env["error"] = f"{type(exc).__name__}: {exc}"
    try:
        from quant_guard.model.checkpoints import file_sha256

        hashes = dict(session.reference_hashes(spec))
        for scheme_id, path in sorted(session.resolved(spec).scheme_dits.items()):
            hashes[f"dit@{scheme_id}"] = file_sha256(path)  # a scheme's pre-quantized DiT
        env["checkpoint_hashes"] = hashes
    except Exception as exc:  # an unresolvable checkpoint already failed its tests
        env["checkpoint_hashes_error"] = f"{type(exc).__name__}: {exc}"
    return env
