"""results.json: one JSON record per visual test, built where the test ran (the only process or
an xdist worker), merged and written once by the controller.

A record is plain JSON data (``run.case_record`` builds it where the test ran, from the case's
result); this module serializes, merges, orders, writes and reads them, and never sees the run's
session.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


RESULTS_NAME = "results.json"
RESULTS_VERSION = 1
GOLDEN_COPY = "golden.png"
_SIMPLE = (str, int, float, bool, type(None))


# ---- generic serialization -------------------------------------------------------------------

def to_jsonable(value: Any, *, base: Path | None = None) -> Any:
    """Plain JSON data of ``value``: dataclasses become objects (their fields, plus properties
    with simple values such as ``passed``), enums their value, paths strings relative to
    ``base`` when inside it, non-finite floats the strings "inf", "-inf", "nan"."""
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value, base=base)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return str(value)  # plain str: subclasses (torch's TorchVersion) do not cross to xdist
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
    if isinstance(value, Path):
        return relative_path(value, base)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: to_jsonable(getattr(value, f.name), base=base) for f in dataclasses.fields(value)}
        for name in dir(type(value)):
            if isinstance(getattr(type(value), name), property) and not name.startswith("_") and name not in out:
                try:
                    derived = getattr(value, name)
                except Exception:  # a property that cannot be computed is left out
                    continue
                if isinstance(derived, _SIMPLE):
                    out[name] = to_jsonable(derived, base=base)
        return out
    if isinstance(value, Mapping):
        return {str(to_jsonable(k, base=base)): to_jsonable(v, base=base) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v, base=base) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return to_jsonable(value.item(), base=base)
    return str(value)


def as_float(value: Any) -> float | None:
    """Inverse of the float encoding of ``to_jsonable``; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if value in ("inf", "-inf", "nan"):
        return float(value)
    return None


def relative_path(path: Path, base: Path | None) -> str:
    if base is not None:
        try:
            return path.resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            pass
    return path.resolve().as_posix()


# ---- the whole file --------------------------------------------------------------------------

def is_failure(record: Mapping[str, Any]) -> bool:
    return record.get("outcome") == "failed" or not record.get("passed", False)


def headline(record: Mapping[str, Any]) -> str:
    """One line on why a test failed: its failed checks, else the first line of the reason."""
    failed = [c for c in [*(record.get("checks") or []), *(record.get("budget_checks") or [])]
              if isinstance(c, dict) and c.get("passed") is False]
    if failed:
        return "; ".join(_describe_check(c) for c in failed)
    lines = str(record.get("reason") or "").splitlines()
    return lines[0] if lines else ("test failed after the visual check" if is_failure(record) else "")


def _describe_check(check: Mapping[str, Any]) -> str:
    name = check.get("metric") or check.get("name")
    value, limit = as_float(check.get("value")), as_float(check.get("limit"))
    if value is None or limit is None:
        return f"{name} failed"
    if check.get("unit") == "bytes":
        from quant_guard.config.units import format_bytes as fmt
    elif check.get("unit") == "s":
        from quant_guard.config.units import format_seconds as fmt
    else:
        def fmt(v: float) -> str:
            return f"{v:.2f} dB" if name == "PSNR" else f"{v:.4f}"
    op, bound = ("<", "min") if check.get("higher_is_better") else (">", "max")
    source = f" ({check['source']})" if check.get("source") and check.get("source") != "threshold" else ""
    return f"{name} {fmt(value)} {op} {bound} {fmt(limit)}{source}"


def sort_records(records: Iterable[dict[str, Any]], order: list[str]) -> list[dict[str, Any]]:
    """Declaration order of the configuration (``order`` = test ids), unknown ids last."""
    rank = {test_id: i for i, test_id in enumerate(order)}
    return sorted(records, key=lambda r: (rank.get(r.get("id", ""), len(rank)), str(r.get("id", ""))))


def results_document(records: list[dict[str, Any]], *, config_source: Path, report_dir: Path) -> dict[str, Any]:
    verdicts = Counter(str(r.get("verdict")) for r in records)
    failed = sum(1 for r in records if is_failure(r))
    return {
        "quant_guard_results": RESULTS_VERSION,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config": config_source.as_posix(),
        "report_dir": report_dir.resolve().as_posix(),
        "summary": {"total": len(records), "passed": len(records) - failed, "failed": failed,
                    "verdicts": dict(sorted(verdicts.items()))},
        "results": records,
    }


def write_results(report_dir: Path, document: dict[str, Any]) -> Path:
    """Write results.json atomically (temp file + rename)."""
    from quant_guard.store.atomic import atomic_write

    report_dir.mkdir(parents=True, exist_ok=True)
    path = report_dir / RESULTS_NAME
    text = json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    atomic_write(path, text.encode("utf-8"))
    return path


def read_results(report_dir: Path) -> dict[str, Any]:
    data = json.loads((report_dir / RESULTS_NAME).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("quant_guard_results") != RESULTS_VERSION:
        raise ValueError(f"{report_dir / RESULTS_NAME} is not a quant_guard results file (version {RESULTS_VERSION})")
    return data
