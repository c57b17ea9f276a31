"""Strict parsing of the unit strings used in limits: byte sizes ("10 GiB", "512 MB") and
durations ("9.5 s", "250 ms"). Binary and decimal prefixes are different numbers, so a bare
"10G" is refused instead of guessed."""

from __future__ import annotations

import math
import re

_BYTE_UNITS = {
    "B": 1,
    "kB": 10**3, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
}
_TIME_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0}
_NUMBER_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*([A-Za-zµ]+)\s*$")


class UnitError(ValueError):
    """A unit string that cannot be parsed; the message says what is accepted."""


def _split(text: str, units: dict[str, float] | dict[str, int], what: str) -> tuple[float, str]:
    if not isinstance(text, str):
        raise UnitError(f"{what} must be a string with a unit such as {_example(what)!r}, got {text!r}")
    match = _NUMBER_UNIT.match(text)
    if not match:
        raise UnitError(f"cannot parse {what} {text!r}: expected a number and a unit, e.g. {_example(what)!r}")
    number_text = text.strip()[: len(text.strip()) - len(match.group(2))].strip()
    value = float(number_text)
    unit = match.group(2)
    if unit not in units:
        raise UnitError(f"unknown unit {unit!r} in {what} {text!r}; use one of {', '.join(units)}")
    if not math.isfinite(value) or value <= 0:
        raise UnitError(f"{what} {text!r} must be a positive, finite amount")
    return value, unit


def _example(what: str) -> str:
    return "10 GiB" if what == "memory size" else "9.5 s"


def parse_bytes(text: str) -> int:
    """``"10 GiB"`` -> 10737418240. Decimal (kB, MB, GB) and binary (KiB, MiB, GiB) prefixes."""
    value, unit = _split(text, _BYTE_UNITS, "memory size")
    total = value * _BYTE_UNITS[unit]
    if not math.isfinite(total):
        raise UnitError(f"memory size {text!r} must be a positive, finite amount")
    if total < 1:
        raise UnitError(f"memory size {text!r} is less than one byte; e.g. {_example('memory size')!r}")
    return int(round(total))


def parse_seconds(text: str) -> float:
    """``"9.5 s"`` -> 9.5; also ns, us, ms, min."""
    value, unit = _split(text, _TIME_UNITS, "duration")
    total = value * _TIME_UNITS[unit]
    if not math.isfinite(total) or total <= 0:
        raise UnitError(f"duration {text!r} must be a positive, finite amount")
    return total


def format_bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def format_seconds(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    if s >= 1e-6:
        return f"{s * 1e6:.1f} us"
    return f"{s * 1e9:.0f} ns"


AUTO = "auto"  # a vram_limit resolved per device: its total memory minus 0.5 GiB (model.memory_plan)


def parse_vram_limit(text: str) -> int | None:
    """``"auto"`` -> None (resolved per device by ``plan_memory``), ``"N GiB"`` -> bytes."""
    if text == AUTO:
        return None
    try:
        return parse_bytes(text)
    except UnitError as exc:
        raise UnitError(f'{exc}; or "auto" (the device\'s total memory minus 0.5 GiB)') from None
