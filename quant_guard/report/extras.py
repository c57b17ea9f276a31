"""pytest-html extras of a failing visual test: its difference image and its metric table.

Only imported when pytest-html is active and ``--html`` was given. The image is embedded as
base64 (pytest-html stores it as an asset, or inline with ``--self-contained-html``), so it
does not depend on where the HTML file ends up relative to the report directory.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def failure_extras(record: Mapping[str, Any], report_dir: Path) -> list[dict[str, Any]]:
    from pytest_html import extras

    from quant_guard.report.html import render_extras_table

    out = []
    images = record.get("images") or {}
    for key, name in (("diff", "difference x4 (quant_guard)"), ("candidate", "candidate (quant_guard)")):
        path = _resolve(images.get(key), report_dir)
        if path is not None and path.is_file():
            out.append(extras.png(base64.b64encode(path.read_bytes()).decode("ascii"), name=name))
    out.append(extras.html(render_extras_table(record)))
    return out


def _resolve(value: Any, report_dir: Path) -> Path | None:
    if not value:
        return None
    path = Path(str(value))
    return path if path.is_absolute() else report_dir / path
