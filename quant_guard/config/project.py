"""The ``[tool.quant_guard]`` configuration: checkpoints under test, cases, thresholds, limits.

Read from ``pyproject.toml`` or from a TOML file given with ``--qg-config`` (same schema, either
at top level or under ``[tool.quant_guard]``). Parsing is strict: an unknown key, a wrong type,
a bad unit or a duplicate id is a ``ConfigError`` that names the file and the key. Relative
paths are resolved against the directory of the file that declares them.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quant_guard.config.limits import Budget, PeakCounts, StepStatistic
from quant_guard.config.limits import DriftTolerance, ReferenceMode
from quant_guard.config.limits import BASELINES, METRICS, PSNR_AMOUNT_DB, AlarmMode, HistoryAlarm, TrendSettings
from quant_guard.config.units import AUTO, parse_vram_limit
from quant_guard.config.method_names import did_you_mean, known_methods
from quant_guard.config.schemes import (
    DEFAULT_SCHEMES,
    DIT,
    QUANTIZE_MODES,
    REFERENCE,
    STORAGE_DTYPES,
    ComponentScheme,
    Quantization,
    Scheme,
)
from quant_guard.config.families import DEFAULT_FAMILY, EMBEDDED, FAMILIES, SECOND_DIT, RenderDefaults
from quant_guard.config.sources import ComponentSource
from quant_guard.config.thresholds import LIMITS, MEANING_KEY, MEANING_OFF, ExpectedSettings, ThresholdOverrides, Thresholds
from quant_guard.config.units import UnitError, parse_bytes, parse_seconds

# Ids become file and folder names of goldens, so they are restricted to a safe alphabet.
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DEVICES = ("auto", "cpu", "cuda")
MARKS = ("gpu",)
MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes an unsigned 64-bit seed


class ConfigError(ValueError):
    """Invalid configuration; the message starts with "file: key:"."""


@dataclass(frozen=True)
class CheckpointSpec:
    id: str
    embedded: str | None  # "tiny" (families.EMBEDDED), or None for a checkpoint given by its components
    components: dict[str, ComponentSource]  # empty for an embedded checkpoint
    family: str = DEFAULT_FAMILY  # its model family (families.FAMILIES; quant_guard.model.families)
    # the candidates, each compared with the bf16 golden (schemes.py); declared_schemes: the
    # configuration lists them, so test ids and expected-metrics files name the scheme
    schemes: tuple[Scheme, ...] = DEFAULT_SCHEMES
    declared_schemes: bool = False
    device: str = "auto"
    cpu_offload: bool = False  # every component in host memory between forwards (memory_plan.py)
    vram_limit_bytes: int | None = None  # with cpu_offload: device memory up to which layers stay; None = "auto"
    disk_offload: bool = False  # DiT and T5 read from their files layer by layer (memory_plan.py)
    t5_sequence_length: int = 512
    marks: tuple[str, ...] = ()
    thresholds: ThresholdOverrides = field(default_factory=ThresholdOverrides)
    limits: Budget = field(default_factory=Budget)
    render: RenderDefaults = field(default_factory=RenderDefaults)
    deterministic: bool = False  # deterministic kernels (CUDA) before its pipelines are built


@dataclass(frozen=True)
class CaseSpec:
    id: str
    prompt: str
    seeds: tuple[int, ...]
    steps: int | None  # None: the checkpoint's default
    width: int | None
    height: int | None
    guidance: float | None
    checkpoints: tuple[str, ...]
    thresholds: ThresholdOverrides = field(default_factory=ThresholdOverrides)
    # the text the image must show, read by OCR (quant_guard.judge.text), and where: (x, y, w, h) px
    expect_text: tuple[str, ...] = ()
    expect_text_region: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class QuantGuardConfig:
    source: Path  # the file the configuration was read from
    golden_dir: Path
    report_dir: Path
    thresholds: Thresholds
    expected: ExpectedSettings
    checkpoints: tuple[CheckpointSpec, ...]
    cases: tuple[CaseSpec, ...]
    drift_tolerance: DriftTolerance = field(default_factory=DriftTolerance)
    reference: ReferenceMode = ReferenceMode.GOLDEN
    history_dir: Path | None = None  # where each run appends its metrics (history.py)
    history_alarm: HistoryAlarm | None = None
    history_report: TrendSettings = field(default_factory=TrendSettings)  # the report's trends

    def checkpoint(self, checkpoint_id: str) -> CheckpointSpec:
        for c in self.checkpoints:
            if c.id == checkpoint_id:
                return c
        raise KeyError(checkpoint_id)


class _Table:
    """A TOML table being validated: typed getters that name the key on error, and a check
    that every key was understood."""

    def __init__(self, data: Any, where: str, file: Path) -> None:
        self.file, self.where = file, where
        if not isinstance(data, dict):
            self.fail("", f"must be a table, got {type(data).__name__}")
        self.data: dict[str, Any] = data
        self.seen: set[str] = set()

    def fail(self, key: str, message: str) -> None:
        path = _join(self.where, key) if key != "" else self.where
        raise ConfigError(f"{self.file}: {path}: {message}")

    def get(self, key: str, types: type | tuple[type, ...], default: Any = None, *, required: bool = False) -> Any:
        self.seen.add(key)
        if key not in self.data:
            if required:
                self.fail(key, "is required")
            return default
        value = self.data[key]
        # bool is an int subclass in Python; a boolean where a number is expected is a mistake
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
            names = " or ".join(t.__name__ for t in _as_tuple(types))
            self.fail(key, f"must be {names}, got {type(value).__name__} {value!r}")
        return value

    def number(self, key: str, default: float | None = None, *, low: float | None = None,
               high: float | None = None) -> float | None:
        value = self.get(key, (int, float), default)
        if value is None:
            return None
        if not math.isfinite(value):  # NaN passes every range check and then every comparison
            self.fail(key, f"must be a finite number, got {value}")
        if (low is not None and value < low) or (high is not None and value > high):
            self.fail(key, f"must be between {low} and {high}, got {value}")
        return float(value)

    def integer(self, key: str, default: int | None = None, *, low: int = 0, required: bool = False) -> int:
        value = self.get(key, int, default, required=required)
        if value is not None and value < low:
            self.fail(key, f"must be >= {low}, got {value}")
        return value  # type: ignore[no-any-return]

    def identifier(self, key: str) -> str:
        value: str = self.get(key, str, required=True)
        if not _ID.match(value):
            self.fail(key, f"{value!r} is not a valid id: use letters, digits, '.', '_' or '-' "
                           "(it becomes a file name), at most 64 characters")
        return value

    def sub(self, key: str) -> _Table | None:
        value = self.get(key, dict)
        return None if value is None else _Table(value, _join(self.where, key), self.file)

    def finish(self) -> None:
        self.only(self.seen)

    def only(self, known: set[str] | frozenset[str]) -> None:
        """Fail on the first key not in ``known``, with a did-you-mean when one is close."""
        unknown = sorted(set(self.data) - set(known), key=str)
        if unknown:
            hint = did_you_mean(str(unknown[0]), frozenset(known))
            self.fail(unknown[0], f"unknown key{hint} (known keys here: {', '.join(sorted(known))})")


def _join(where: str, key: Any) -> str:
    """``where.key``, the key quoted as TOML writes it when it is not a bare key (so a key such
    as " " or "a.b" reads unambiguously in a message)."""
    text = str(key)
    return f"{where}.{text}" if _BARE_KEY.match(text) else f"{where}.{json.dumps(text, ensure_ascii=False)}"


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def declares_quant_guard(pyproject: Path) -> bool:
    """Whether a pyproject.toml has a ``[tool.quant_guard]`` table (a comment that mentions one
    does not count). A file that is not valid TOML counts when it mentions the table, so that
    ``load_config`` reports the syntax error with the file's name."""
    text = pyproject.read_text(encoding="utf-8", errors="replace")
    try:
        tool = tomllib.loads(text).get("tool")
    except tomllib.TOMLDecodeError:
        return "[tool.quant_guard" in text
    return isinstance(tool, dict) and "quant_guard" in tool


def load_config(file: Path, *, from_pyproject: bool | None = None) -> QuantGuardConfig:
    """Read and validate a configuration file. A ``pyproject.toml`` (or any file with a
    ``[tool.quant_guard]`` table) is read from that table; any other file from its top level."""
    file = file.resolve()
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{file}: configuration file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    if "tool" in data and isinstance(data["tool"], dict) and "quant_guard" in data["tool"]:
        return parse_config(data["tool"]["quant_guard"], file=file, where="tool.quant_guard")
    if from_pyproject or file.name == "pyproject.toml":
        raise ConfigError(f"{file}: has no [tool.quant_guard] table")
    return parse_config(data, file=file, where="quant_guard")


def parse_config(data: Any, *, file: Path, where: str = "tool.quant_guard") -> QuantGuardConfig:
    root = _Table(data, where, file)
    base = file.parent
    golden_dir = _path(root, "golden_dir", root.get("golden_dir", str, "golden"), base, resolve=False)
    report_dir = _path(root, "report_dir", root.get("report_dir", str, "qg-report"), base, resolve=False)
    thresholds = Thresholds.DEFAULT
    if (t := root.sub("thresholds")) is not None:
        thresholds = _threshold_overrides(t).apply(thresholds)
    expected = _expected(root.sub("expected"))
    drift_tolerance = _drift_tolerance(root.sub("drift_tolerance"))
    reference = root.get("reference", str, ReferenceMode.GOLDEN.value)
    if reference not in {m.value for m in ReferenceMode}:
        root.fail("reference", f"must be one of {', '.join(m.value for m in ReferenceMode)}, got {reference!r}")
    history_text = root.get("history_dir", str)
    history_dir = None if history_text is None else _path(root, "history_dir", history_text, base, resolve=False)
    history_alarm = _history_alarm(root.sub("history_alarm"))
    history_report = _history_report(root.sub("history_report"))
    checkpoints = tuple(_checkpoint(_Table(c, f"{where}.checkpoints[{i}]", file), base)
                        for i, c in enumerate(root.get("checkpoints", list, [])))
    cases = tuple(_case(_Table(c, f"{where}.cases[{i}]", file), checkpoints)
                  for i, c in enumerate(root.get("cases", list, [])))
    root.finish()
    _unique(root, "checkpoints", [c.id for c in checkpoints])
    _unique(root, "cases", [c.id for c in cases])
    return QuantGuardConfig(source=file, golden_dir=golden_dir, report_dir=report_dir,
                            thresholds=thresholds, expected=expected, checkpoints=checkpoints, cases=cases,
                            drift_tolerance=drift_tolerance, reference=ReferenceMode(reference),
                            history_dir=history_dir, history_alarm=history_alarm, history_report=history_report)


def _unique(table: _Table, key: str, ids: list[str]) -> None:
    seen: set[str] = set()
    for i in ids:
        # case-insensitive: goldens on a case-insensitive file system would collide
        if i.lower() in seen:
            table.fail(key, f"duplicate id {i!r}")
        seen.add(i.lower())


def _threshold_overrides(t: _Table) -> ThresholdOverrides:
    """A thresholds table: one number per key of ``LIMITS`` (range checked), and ``meaning``, the
    name of a semantic scorer (``quant_guard.judge.semantic``) or "off"."""
    numbers = {limit.key: t.number(limit.key, low=limit.low, high=limit.high) for limit in LIMITS}
    low, high = numbers["sharpness_min"], numbers["sharpness_max"]
    if low is not None and high is not None and low > high:
        t.fail("sharpness_min", f"must not exceed sharpness_max ({high}), got {low}")
    meaning = t.get(MEANING_KEY, str)
    if meaning is not None and not meaning.strip():
        t.fail(MEANING_KEY, f'must name a semantic scorer (e.g. "tiny-scene", "clip") or "{MEANING_OFF}"')
    t.finish()
    return ThresholdOverrides(**numbers, meaning=meaning)


def _expected(t: _Table | None) -> ExpectedSettings:
    if t is None:
        return ExpectedSettings()
    d = ExpectedSettings()
    result = ExpectedSettings(
        enabled=t.get("enabled", bool, d.enabled),
        lpips_factor=t.number("lpips_factor", d.lpips_factor, low=1.0, high=100.0),  # type: ignore[arg-type]
        lpips_margin=t.number("lpips_margin", d.lpips_margin, low=0.0, high=2.0),  # type: ignore[arg-type]
        ssim_margin=t.number("ssim_margin", d.ssim_margin, low=0.0, high=2.0),  # type: ignore[arg-type]
        psnr_margin_db=t.number("psnr_margin_db", d.psnr_margin_db, low=0.0, high=200.0),  # type: ignore[arg-type]
        delta_e_margin=t.number("delta_e_margin", d.delta_e_margin, low=0.0, high=200.0),  # type: ignore[arg-type]
        hue_margin_deg=t.number("hue_margin_deg", d.hue_margin_deg, low=0.0, high=180.0),  # type: ignore[arg-type]
        sharpness_margin=t.number("sharpness_margin", d.sharpness_margin, low=0.0, high=100.0),  # type: ignore[arg-type]
        region_margin=t.number("region_margin", d.region_margin, low=0.0, high=2.0),  # type: ignore[arg-type]
        text_cer_margin=t.number("text_cer_margin", d.text_cer_margin, low=0.0, high=1.0),  # type: ignore[arg-type]
        flicker_margin=t.number("flicker_margin", d.flicker_margin, low=0.0, high=255.0),  # type: ignore[arg-type]
        exposure_flicker_margin=t.number("exposure_flicker_margin", d.exposure_flicker_margin, low=0.0,  # type: ignore[arg-type]
                                         high=255.0),
        tlp_margin=t.number("tlp_margin", d.tlp_margin, low=0.0, high=2.0),  # type: ignore[arg-type]
    )
    t.finish()
    return result


def _drift_tolerance(t: _Table | None) -> DriftTolerance:
    if t is None:
        return DriftTolerance()
    d = DriftTolerance()
    result = DriftTolerance(lpips=t.number("lpips", d.lpips, low=0.0, high=2.0),  # type: ignore[arg-type]
                            psnr=t.number("psnr", d.psnr, low=0.0, high=200.0))  # type: ignore[arg-type]
    t.finish()
    return result


def _history_alarm(t: _Table | None) -> HistoryAlarm | None:
    if t is None:
        return None
    d = HistoryAlarm()
    metric = t.get("metric", str, d.metric)
    if metric not in METRICS:
        t.fail("metric", f"must be one of {', '.join(METRICS)}, got {metric!r}")
    if metric == "psnr" and "ratio" in t.data:
        # ratio once divided the dB (48 -> 32.5 dB was within x1.5); PSNR is judged in dB differences
        t.fail("ratio", "does not apply to psnr, which is judged in dB: give amount in dB "
                        f"(the default {PSNR_AMOUNT_DB:g} dB is x1.5 of the error)")
    ratio = t.number("ratio", None, low=1.0, high=1000.0)
    amount = t.number("amount", None, low=0.0, high=1e15)
    if ratio is None and amount is None:
        ratio, amount = (None, PSNR_AMOUNT_DB) if metric == "psnr" else (d.ratio, None)
    mode = t.get("mode", str, d.mode.value)
    if mode not in {m.value for m in AlarmMode}:
        t.fail("mode", f"must be one of {', '.join(m.value for m in AlarmMode)}, got {mode!r}")
    window = t.integer("window", d.window, low=1)
    min_runs = t.integer("min_runs", min(d.min_runs, window), low=1)
    if min_runs > window:
        t.fail("min_runs", f"must be at most window ({window}), got {min_runs}")
    step_runs = t.integer("step_runs", d.step_runs, low=0)
    alpha = t.number("alpha", d.alpha, low=0.0, high=0.5)
    result = HistoryAlarm(metric=metric, ratio=ratio, amount=amount, window=window, min_runs=min_runs,
                          step_runs=step_runs, alpha=alpha, mode=AlarmMode(mode))  # type: ignore[arg-type]
    t.finish()
    return result


def _history_report(t: _Table | None) -> TrendSettings:
    d = TrendSettings()
    if t is None:
        return d
    metric = t.get("metric", str, d.metric)
    if metric not in METRICS:
        t.fail("metric", f"must be one of {', '.join(METRICS)}, got {metric!r}")
    baseline = t.get("baseline", str, d.baseline)
    if not baseline:
        t.fail("baseline", f"must be {' or '.join(BASELINES)} or a run id, got an empty string")
    result = TrendSettings(runs=t.integer("runs", d.runs, low=2), baseline=baseline, metric=metric,
                           top=t.integer("top", d.top, low=1))
    t.finish()
    return result


def _path(t: _Table, key: str, value: str, base: Path, *, resolve: bool = True) -> Path:
    """``value`` relative to ``base``; a path the OS cannot use is an error naming the key."""
    try:
        if "\0" in value:
            raise ValueError("it contains a NUL character")
        return (base / value).resolve() if resolve else base / value
    except (ValueError, OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        t.fail(key, f"not a usable path: {value!r} ({exc})")
        raise AssertionError from None  # unreachable: fail() raises


def _source(value: Any, t: _Table, key: str, base: Path) -> ComponentSource:
    if isinstance(value, str):
        return ComponentSource(path=_path(t, key, value, base))
    if isinstance(value, dict):
        s = _Table(value, _join(t.where, key), t.file)
        model_id = s.get("model_id", str, required=True)
        pattern = s.get("origin_file_pattern", str, required=True)
        s.finish()
        return ComponentSource(model_id=model_id, origin_file_pattern=pattern)
    t.fail(key, "must be a path string or a table {model_id = ..., origin_file_pattern = ...}")
    raise AssertionError  # unreachable: fail() raises


def _checkpoint(t: _Table, base: Path) -> CheckpointSpec:
    checkpoint_id = t.identifier("id")
    embedded = t.get("embedded", str)
    if embedded is not None and embedded not in EMBEDDED:
        t.fail("embedded", f"unknown embedded checkpoint {embedded!r}; known: {', '.join(EMBEDDED)}")
    family = _family(t, embedded)
    components: dict[str, ComponentSource] = {}
    keys = FAMILIES[family].components
    if (c := t.sub("components")) is not None:
        for key in keys:
            if key in c.data:
                components[key] = _source(c.get(key, (str, dict)), c, key, base)
        unknown = sorted(set(c.data) - set(keys), key=str)
        if unknown:
            hint = did_you_mean(str(unknown[0]), frozenset(keys))
            c.fail(unknown[0], f"unknown key{hint}: the {family!r} family's components are {', '.join(keys)}")
    if embedded and components:
        t.fail("components", "an embedded checkpoint takes no components")
    if not embedded:
        missing = [k for k in keys if k not in components and k not in FAMILIES[family].optional]
        if missing:
            t.fail("components", f"missing {', '.join(missing)} (the {family!r} family's components: "
                   f"{', '.join(keys)}; or set embedded = \"tiny\")")
    schemes, declared = _schemes(t, base, family)
    if SECOND_DIT in components:
        _refuse_own_dit_files(t, schemes)
    device = t.get("device", str, "auto")
    if device not in DEVICES:
        t.fail("device", f"must be one of {', '.join(DEVICES)}, got {device!r}")
    marks = tuple(t.get("marks", list, []))
    for m in marks:
        if m not in MARKS:
            t.fail("marks", f"unknown mark {m!r}; known: {', '.join(MARKS)}")
    # an embedded checkpoint brings the thresholds measured for it; the table's own win
    # an embedded checkpoint's measured thresholds apply below these (VisualCase.configured_thresholds)
    thresholds = ThresholdOverrides()
    if (th := t.sub("thresholds")) is not None:
        thresholds = _threshold_overrides(th)
    limits = Budget()
    if (lim := t.sub("limits")) is not None:
        limits = _limits(lim)
    # an embedded checkpoint brings the render settings its thresholds were measured at, a real
    # one its family's (DiffSynth's example)
    render = EMBEDDED[embedded].render if embedded else FAMILIES[family].render
    if (r := t.sub("render")) is not None:
        size = _size(r, f"{render.width}x{render.height}")
        render = RenderDefaults(steps=r.integer("steps", render.steps, low=1), width=size[0], height=size[1],
                                guidance=r.number("guidance", render.guidance, low=0.0, high=100.0),  # type: ignore[arg-type]
                                **_clip_settings(r, family, render))
        r.finish()
    t5_sequence_length = _t5_sequence_length(t, embedded, family)
    cpu_offload = t.get("cpu_offload", bool, False)
    spec = CheckpointSpec(
        id=checkpoint_id, embedded=embedded, components=components, family=family,
        schemes=schemes, declared_schemes=declared, device=device,
        cpu_offload=cpu_offload, vram_limit_bytes=_vram_limit(t, cpu_offload),
        disk_offload=t.get("disk_offload", bool, False),
        t5_sequence_length=t5_sequence_length,
        marks=marks, thresholds=thresholds, limits=limits, render=render,
        deterministic=t.get("deterministic", bool, False),
    )
    t.finish()
    return spec


def _family(t: _Table, embedded: str | None) -> str:
    """``family = ...``: one of FAMILIES; an embedded checkpoint's is its own (naming another is an error)."""
    named = t.get("family", str)
    if named is not None and named not in FAMILIES:
        t.fail("family", f"unknown model family {named!r}; known: {', '.join(FAMILIES)}")
    if embedded is None:
        return named or DEFAULT_FAMILY
    own = EMBEDDED[embedded].family
    if named is not None and named != own:
        t.fail("family", f"the embedded {embedded!r} checkpoint is of the {own!r} family, not {named!r}")
    return own


def _t5_sequence_length(t: _Table, embedded: str | None, family: str) -> int:
    """The T5 length FLUX.1's pipeline is called with; the other families have no T5 encoder."""
    trained = EMBEDDED[embedded].t5_sequence_length if embedded else None
    if "t5_sequence_length" in t.data:
        if not FAMILIES[family].t5_sequence_length:
            t.fail("t5_sequence_length", f"the {family!r} family has no T5 text encoder; remove the key")
        if trained is not None:
            t.fail("t5_sequence_length", f"the embedded {embedded!r} checkpoint always uses the length it was "
                   f"trained with ({trained}); remove the key")
    return trained if trained is not None else t.integer("t5_sequence_length", 512, low=1)


def _schemes(t: _Table, base: Path, family: str) -> tuple[tuple[Scheme, ...], bool]:
    """``schemes = [...]`` (names or tables), or the single-candidate shorthand ``candidate = {
    scheme = ..., dit = ... }``; neither: the float8_e4m3fn candidate."""
    if "schemes" in t.data and "candidate" in t.data:
        t.fail("candidate", "give either candidate (one float8 candidate) or schemes (several), not both")
    if (cand := t.sub("candidate")) is not None:
        storage = cand.get("scheme", str, DEFAULT_SCHEMES[0].storage_dtype)
        if storage not in STORAGE_DTYPES:
            cand.fail("scheme", f"unknown storage scheme {storage!r}; known: {', '.join(STORAGE_DTYPES)} "
                      "(quantization methods go in a schemes list)")
        dit = _source(cand.get("dit", (str, dict)), cand, "dit", base) if "dit" in cand.data else None
        cand.finish()
        return (Scheme(storage, storage_dtype=storage, dit=dit),), False
    entries = t.get("schemes", list)
    if entries is None:
        return DEFAULT_SCHEMES, False
    if not entries:
        t.fail("schemes", "is empty; leave it out for the single float8_e4m3fn candidate")
    schemes = tuple(_scheme(entry, t, f"schemes[{i}]", base, family) for i, entry in enumerate(entries))
    _unique(t, "schemes", [s.id for s in schemes])
    return schemes, True


def _refuse_own_dit_files(t: _Table, schemes: tuple[Scheme, ...]) -> None:
    """A checkpoint with a second DiT gives both DiTs the scheme's DiT entry; a pre-quantized DiT
    file would quantize one of them only (a file per DiT is not supported yet)."""
    for scheme in schemes:
        if scheme.dit is not None:
            t.fail("candidate" if "candidate" in t.data else "schemes",
                   f"scheme {scheme.id!r} gives the DiT a file of its own, but this checkpoint has a second DiT "
                   f"({SECOND_DIT}) that the file would leave out: a pre-quantized file per DiT is not supported "
                   "yet; quantize both on load (a storage dtype or a method) instead")


def _scheme(entry: Any, parent: _Table, key: str, base: Path, family: str = DEFAULT_FAMILY) -> Scheme:
    bare = isinstance(entry, str)
    if bare:  # a bare name: a storage dtype or a diffsynth.core.quant method
        entry = {"storage": entry} if entry in STORAGE_DTYPES else {"method": entry}
    where = f"{parent.where}.{key}"  # key is "schemes[i]", the way TOML users read an array item
    if not isinstance(entry, dict):
        raise ConfigError(f"{parent.file}: {where}: must be a scheme name or a table, got "
                          f"{type(entry).__name__} {entry!r}")
    s = _Table(entry, where, parent.file)
    s.only(_SCHEME_KEYS)  # "storge = ..." is a typo of a key, not a scheme without storage
    if "components" in s.data:
        return _component_scheme(s, base, family)
    dit = _stored_as(s, bare, base, file_key="dit")
    scheme_id = _scheme_id(s, s.get("id", str, dit.quantization.method if dit.quantization else dit.storage_dtype))
    thresholds = _scheme_thresholds(s)
    s.finish()
    return Scheme(scheme_id, storage_dtype=dit.storage_dtype, quantization=dit.quantization, dit=dit.file,
                  thresholds=thresholds)


def _stored_as(s: _Table, bare: bool, base: Path, *, file_key: str) -> ComponentScheme:
    """One component's storage (``storage`` or ``method`` with its options, and a pre-quantized
    file under ``file_key``) from a scheme table or a table of its ``components``."""
    storage, method = s.get("storage", str), s.get("method", str)
    if (storage is None) == (method is None):
        s.fail("", "needs exactly one of storage (a float8 dtype DiffSynth stores the weights in) or method "
               "(a diffsynth.core.quant method, e.g. bitsandbytes_nf4)")
    if storage is not None and storage not in STORAGE_DTYPES:
        s.fail("storage", f"must be one of {', '.join(STORAGE_DTYPES)}, got {storage!r}"
                          f"{did_you_mean(storage, STORAGE_DTYPES)}")
    if method is not None:
        _check_method(s, method, key="" if bare else "method")
    file = _source(s.get(file_key, (str, dict)), s, file_key, base) if file_key in s.data else None
    quantization = None
    if method is not None:
        quantization = _quantization(s, method, prequantized_file=file is not None)
    else:
        for option in _METHOD_OPTIONS:
            if option in s.data:
                s.fail(option, "applies only to a quantization method (storage schemes store every linear layer)")
    return ComponentScheme(storage or REFERENCE.storage_dtype, quantization, file)


def _scheme_id(s: _Table, scheme_id: str | None) -> str:
    if scheme_id is None:
        s.fail("id", "is required for a scheme that names its components (it names the test and its files)")
    assert scheme_id is not None
    if not _ID.match(scheme_id):
        s.fail("id", f"{scheme_id!r} is not a valid id: use letters, digits, '.', '_' or '-'")
    if scheme_id == REFERENCE.id:
        s.fail("id", f"{scheme_id!r} names the bf16 reference; choose another id")
    return scheme_id


def _scheme_thresholds(s: _Table) -> ThresholdOverrides:
    th = s.sub("thresholds")
    return ThresholdOverrides() if th is None else _threshold_overrides(th)


def _component_scheme(s: _Table, base: Path, family: str) -> Scheme:
    """``{ id = ..., components = { dit = "float8_e4m3fn", text_encoder_t5 = {...} } }``: each named
    model component of the checkpoint's family in its own storage, the others bf16."""
    for key in sorted(set(s.data) & (_SCHEME_KEYS - {"id", "components", "thresholds"})):
        s.fail(key, "goes inside components (a scheme naming its components sets each one's storage or method "
                    "there, e.g. components = { dit = \"float8_e4m3fn\" })")
    c = s.sub("components")
    assert c is not None
    settings = FAMILIES[family]
    models = settings.model_components
    if not c.data:
        c.fail("", f"is empty; name at least one of the {family!r} family's components: {', '.join(models)}")
    stored: dict[str, ComponentScheme] = {}
    for name, value in c.data.items():
        if name in settings.components and name not in models:
            c.fail(name, f"is a tokenizer: it has no weights to quantize; the {family!r} family's model "
                         f"components are {', '.join(models)}")
        if name == SECOND_DIT and name in models:
            c.fail(name, f"takes the scheme's DiT entry (both DiTs are quantized alike): set {DIT} instead")
        if name not in models:
            c.fail(name, f"unknown component of the {family!r} family (its model components: "
                         f"{', '.join(models)}){did_you_mean(str(name), frozenset(models))}")
        bare = isinstance(value, str)
        if bare:
            value = {"storage": value} if value in STORAGE_DTYPES else {"method": value}
        if not isinstance(value, dict):
            c.fail(name, f"must be a storage dtype, a method name or a table, got {type(value).__name__} {value!r}")
        t = _Table(value, _join(c.where, name), c.file)
        t.only(_COMPONENT_KEYS)
        stored[name] = _stored_as(t, bare, base, file_key="file")
        t.finish()
        c.seen.add(name)
    c.finish()
    scheme_id = _scheme_id(s, s.get("id", str))
    thresholds = _scheme_thresholds(s)
    s.finish()
    dit = stored.pop(DIT, ComponentScheme())
    return Scheme(scheme_id, storage_dtype=dit.storage_dtype, quantization=dit.quantization, dit=dit.file,
                  thresholds=thresholds, others=tuple(sorted(stored.items())))


_METHOD_OPTIONS = ("mode", "target_modules", "exclude_modules", "backend_config_kwargs", "load_prequantized")
_SCHEME_KEYS = frozenset({"storage", "method", "id", "dit", *_METHOD_OPTIONS, "thresholds", "components"})
# a table of a scheme's ``components``: one component's storage or method, and its own file
_COMPONENT_KEYS = frozenset({"storage", "method", *_METHOD_OPTIONS, "file"})


def _check_method(s: _Table, method: str, *, key: str) -> None:
    """A method name DiffSynth registers; a typo (or a storage dtype misspelt as a bare name) is
    caught here, in milliseconds, rather than after torch is imported at collection."""
    if not _ID.match(method):
        s.fail(key, f"{method!r} is not a method name")
    known = known_methods()
    if known is None or method in known:
        return
    hint = did_you_mean(method, known | frozenset(STORAGE_DTYPES)) or f" (it knows: {', '.join(sorted(known))})"
    s.fail(key, f"unknown scheme {method!r}: not a storage dtype ({', '.join(STORAGE_DTYPES)}) nor a "
                     f"quantization method of the installed DiffSynth{hint}")


def parse_scheme(entry: Any, *, file: Path, where: str, key: str, family: str = DEFAULT_FAMILY) -> Scheme:
    """One entry of a checkpoint's ``schemes`` list (a name or a table), validated as in a
    configuration file (errors name ``where.key``): how the sensitivity sweep checks the scheme
    entry it prints."""
    return _scheme(entry, _Table({}, where, file), key, file.parent, family)


def _quantization(s: _Table, method: str, *, prequantized_file: bool) -> Quantization:
    mode = s.get("mode", str, QUANTIZE_MODES[0])
    if mode not in QUANTIZE_MODES:
        s.fail("mode", f"must be one of {', '.join(QUANTIZE_MODES)}, got {mode!r}")

    def names(key: str) -> tuple[str, ...] | None:
        value = s.get(key, list)
        if value is not None and not all(isinstance(v, str) and v for v in value):
            s.fail(key, f"must be a list of module names, got {value!r}")
        return None if value is None else tuple(value)

    kwargs = s.get("backend_config_kwargs", dict, {})
    for name, value in kwargs.items():
        if not isinstance(value, (str, int, float, bool)):
            raise ConfigError(f"{s.file}: {_join(_join(s.where, 'backend_config_kwargs'), name)}: must be a string, "
                              f"number or boolean, got {value!r}")
    # a DiT file under a method can only be one saved by that method
    prequantized = s.get("load_prequantized", bool, prequantized_file)
    if prequantized != prequantized_file:
        s.fail("load_prequantized", "is true exactly when the scheme names a pre-quantized dit file")
    return Quantization(method=method, mode=mode, target_modules=names("target_modules"),
                        exclude_modules=names("exclude_modules") or (),
                        backend_config_kwargs=tuple(sorted(kwargs.items())), load_prequantized=prequantized)


def _vram_limit(t: _Table, cpu_offload: bool) -> int | None:
    text = t.get("vram_limit", str, AUTO)
    if text != AUTO and not cpu_offload:
        t.fail("vram_limit", "applies only with cpu_offload = true (without it every component stays on the device)")
    try:
        return parse_vram_limit(text)
    except UnitError as exc:
        t.fail("vram_limit", str(exc))
        raise AssertionError from None  # unreachable: fail() raises


def _limits(t: _Table) -> Budget:
    def unit(key: str, parse: Any) -> Any:
        text = t.get(key, str)
        if text is None:
            return None
        try:
            return parse(text)
        except UnitError as exc:
            t.fail(key, str(exc))

    statistic = t.get("step_statistic", str, StepStatistic.MEDIAN.value)
    if statistic not in {s.value for s in StepStatistic}:
        t.fail("step_statistic", f"must be one of {', '.join(s.value for s in StepStatistic)}, got {statistic!r}")
    counts = t.get("peak_vram_counts", str, PeakCounts.DEVICE.value)
    if counts not in {c.value for c in PeakCounts}:
        t.fail("peak_vram_counts", f"must be one of {', '.join(c.value for c in PeakCounts)}, got {counts!r}")
    result = Budget(peak_memory_bytes=unit("peak_vram", parse_bytes), step_time_s=unit("step_time", parse_seconds),
                    resident_memory_bytes=unit("resident_vram", parse_bytes),
                    statistic=StepStatistic(statistic), warmup_steps=t.integer("warmup_steps", 1, low=0),
                    peak_counts=PeakCounts(counts))
    t.finish()
    return result


def _case(t: _Table, checkpoints: tuple[CheckpointSpec, ...]) -> CaseSpec:
    case_id = t.identifier("id")
    prompt = t.get("prompt", str, required=True)
    seeds_value = t.get("seeds", list, [0])
    if not seeds_value or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED
                                  for s in seeds_value):
        t.fail("seeds", f"must be a non-empty list of integers from 0 to 2**64-1, got {seeds_value!r}")
    if len(set(seeds_value)) != len(seeds_value):
        t.fail("seeds", f"has duplicates: {seeds_value!r}")
    width, height = _size(t, None) if "size" in t.data else (None, None)
    known = [c.id for c in checkpoints]
    names = tuple(t.get("checkpoints", list, known))
    for n in names:
        if n not in known:
            t.fail("checkpoints", f"unknown checkpoint {n!r}; declared: {', '.join(known) or 'none'}")
    thresholds = ThresholdOverrides()
    if (th := t.sub("thresholds")) is not None:
        thresholds = _threshold_overrides(th)
    spec = CaseSpec(
        id=case_id, prompt=prompt, seeds=tuple(seeds_value),
        steps=t.integer("steps", None, low=1) if "steps" in t.data else None,
        width=width, height=height, guidance=t.number("guidance", None, low=0.0, high=100.0),
        checkpoints=names, thresholds=thresholds, **_expect_text(t, checkpoints, names, width, height),
    )
    t.finish()
    return spec


def _expect_text(t: _Table, checkpoints: tuple[CheckpointSpec, ...], names: tuple[str, ...],
                 width: int | None, height: int | None) -> dict[str, Any]:
    """``expect_text`` (non-empty strings) and ``expect_text_region`` ([x, y, w, h] in pixels, inside
    the image of every checkpoint the case runs on)."""
    words = t.get("expect_text", list, [])
    if "expect_text" in t.data and (not words or not all(isinstance(w, str) and w.strip() for w in words)):
        t.fail("expect_text", f'must be a non-empty list of non-empty strings, e.g. ["NEON CITY"], got {words!r}')
    region = t.get("expect_text_region", list)
    if region is None:
        return {"expect_text": tuple(words), "expect_text_region": None}
    if not words:
        t.fail("expect_text_region", "needs expect_text: the region says where to read the expected text")
    if len(region) != 4 or not all(isinstance(v, int) and not isinstance(v, bool) for v in region):
        t.fail("expect_text_region", f"must be [x, y, w, h], four integers in pixels, got {region!r}")
    x, y, w, h = region
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        t.fail("expect_text_region", f"x and y must be >= 0 and w and h > 0, got {region!r}")
    for spec in checkpoints:
        if spec.id not in names:
            continue
        iw, ih = width or spec.render.width, height or spec.render.height
        if x + w > iw or y + h > ih:
            t.fail("expect_text_region", f"{region!r} (x, y, w, h) does not lie inside the {iw}x{ih} image the case "
                                         f"renders on checkpoint {spec.id!r}")
    return {"expect_text": tuple(words), "expect_text_region": (x, y, w, h)}


# the most frames a clip may have (Wan2.1's longest example is 81; 16 GiB of uint8 frames at 1080p)
MAX_FRAMES = 1025


def _clip_settings(r: _Table, family: str, render: RenderDefaults) -> dict[str, int]:
    """``frames`` and ``fps`` of a video family's ``render`` table; an image family takes neither."""
    step = FAMILIES[family].frame_step
    if not step:
        for key in ("frames", "fps"):
            if key in r.data:
                r.fail(key, f"the {family!r} family renders images; only a video family (wan) takes {key}")
        return {}
    frames = r.integer("frames", render.frames, low=1)
    if frames > MAX_FRAMES:
        r.fail("frames", f"must be <= {MAX_FRAMES}, got {frames}")
    if (frames - 1) % step:
        r.fail("frames", f"a {family!r} clip has {step}k+1 frames (its VAE packs {step} frames into one latent frame "
                         f"after the first), e.g. {frames - (frames - 1) % step} or "
                         f"{frames - (frames - 1) % step + step}, got {frames}")
    return {"frames": frames, "fps": r.integer("fps", render.fps, low=1)}


def _size(t: _Table, default: str | None) -> tuple[int, int]:
    text = t.get("size", str, default)
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        t.fail("size", f"must look like '1024x1024' (width x height), got {text!r}")
    width, height = int(match.group(1)), int(match.group(2))  # type: ignore[union-attr]
    if width % 16 or height % 16 or width < 32 or height < 32:
        t.fail("size", f"width and height must be multiples of 16 and at least 32 (the DiT's latent patches), got {text!r}")
    return width, height
