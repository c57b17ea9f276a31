"""Bad input and faults, configuration and unit strings: an unknown key, a wrong
type, a bad unit, duplicate ids and ids with path characters are each a ``ConfigError`` that
starts with the file and names the key; property-based tests (hypothesis) feed the parser and
the unit parsers junk and check that nothing else ever escapes, and that valid unit strings
round-trip.
"""

from __future__ import annotations

import copy
import math
import re
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from quant_guard.config.project import ConfigError, QuantGuardConfig, load_config, parse_config
from quant_guard.store.golden import GoldenError, GoldenKey, GoldenStore
from quant_guard.config.units import UnitError, format_bytes, format_seconds, parse_bytes, parse_seconds

FILE = Path("/projects/demo/pyproject.toml")
PROPERTY = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def valid_config() -> dict[str, Any]:
    """A configuration using every key of the schema (as tomllib returns it)."""
    return {
        "golden_dir": "golden", "report_dir": "qg-report",
        "thresholds": {"lpips": 0.05, "ssim": 0.95, "psnr": 30.0},
        "expected": {"enabled": True, "lpips_factor": 1.1, "lpips_margin": 0.005, "ssim_margin": 0.005,
                     "psnr_margin_db": 1.0},
        "drift_tolerance": {"lpips": 0.001, "psnr": 50.0}, "reference": "golden",
        "checkpoints": [
            {"id": "tiny", "embedded": "tiny", "device": "cpu", "render": {"steps": 4, "size": "64x64"}},
            {"id": "real", "marks": ["gpu"], "device": "cuda", "cpu_offload": True, "t5_sequence_length": 512,
             "deterministic": True,
             "render": {"steps": 20, "size": "1024x1024", "guidance": 3.5},
             "thresholds": {"psnr": 25.0},
             "candidate": {"scheme": "float8_e4m3fn", "dit": "fp8/dit.safetensors"},
             "limits": {"peak_vram": "10 GiB", "step_time": "9.5 s", "step_statistic": "median", "warmup_steps": 1},
             "components": {"dit": {"model_id": "a/b", "origin_file_pattern": "dit.safetensors"},
                            "text_encoder_clip": "te/clip.safetensors", "text_encoder_t5": "te/t5.safetensors",
                            "vae": "ae.safetensors", "tokenizer_clip": "tok/clip", "tokenizer_t5": "tok/t5"}},
        ],
        "cases": [
            {"id": "red-circle", "prompt": "a red circle", "seeds": [0, 1], "checkpoints": ["tiny"]},
            {"id": "rain", "prompt": "rain", "steps": 8, "size": "512x512", "guidance": 2.0,
             "thresholds": {"lpips": 0.1, "ssim": 0.9}},
        ],
    }


def test_the_valid_config_parses() -> None:
    config = parse_config(valid_config(), file=FILE)
    assert [c.id for c in config.checkpoints] == ["tiny", "real"]
    assert config.checkpoint("real").limits.peak_memory_bytes == 10 * 2**30


# ---- one error per fault, naming the file and the key -----------------------------------------

def _with(change: str) -> dict[str, Any]:
    data = valid_config()
    exec(change, {"math": math}, {"d": data})  # noqa: S102 - the table below, nothing else
    return data


CONFIG_FAULTS = [
    # (change to the valid configuration, the error after "FILE: ")
    ('d["colden_dir"] = "g"',
     "tool.quant_guard.colden_dir: unknown key; did you mean 'golden_dir'? (known keys here: *golden_dir*)"),
    ('d["checkpoints"][0]["devise"] = "cpu"',
     "tool.quant_guard.checkpoints[[]0[]].devise: unknown key; did you mean 'device'? (known keys*"),
    ('d["thresholds"]["lpip"] = 0.1',
     "tool.quant_guard.thresholds.lpip: unknown key; did you mean 'lpips'? (known keys here: artifacts_max, colour_delta_e_mean, *lpips, "
     "meaning, psnr, *ssim, structure_worst_min, text_cer_max, tlp_max)"),
    ('d["thresholds"]["colour_delta_e_p95"] = -1',
     "tool.quant_guard.thresholds.colour_delta_e_p95: must be between 0.0 and 200.0, got -1"),
    ('d["thresholds"]["sharpness_min"] = "0.9"', "tool.quant_guard.thresholds.sharpness_min: must be int or float, got str '0.9'"),
    ('d["thresholds"]["sharpness_min"] = 1.2; d["thresholds"]["sharpness_max"] = 1.1',
     "tool.quant_guard.thresholds.sharpness_min: must not exceed sharpness_max (1.1), got 1.2"),
    ('d["cases"][0]["thresholds"] = {"meaning": ""}',
     "tool.quant_guard.cases[[]0[]].thresholds.meaning: must name a semantic scorer*"),
    ('d["expected"]["delta_e_margin"] = -0.5', "tool.quant_guard.expected.delta_e_margin: must be between*got -0.5"),
    ('d["checkpoints"][1]["components"]["unet"] = "u.safetensors"',
     "tool.quant_guard.checkpoints[[]1[]].components.unet: unknown key*"),
    ('d["golden_dir"] = 3', "tool.quant_guard.golden_dir: must be str, got int 3"),
    ('d["thresholds"]["psnr"] = True', "tool.quant_guard.thresholds.psnr: must be int or float, got bool True"),
    ('d["cases"][0]["seeds"] = "0"', "tool.quant_guard.cases[[]0[]].seeds: must be list, got str '0'"),
    ('d["cases"][0]["seeds"] = [-1]', "tool.quant_guard.cases[[]0[]].seeds: must be a non-empty list of integers*"),
    ('d["cases"][0]["seeds"] = [2**64]', "tool.quant_guard.cases[[]0[]].seeds: must be a non-empty list of integers*"),
    ('d["checkpoints"] = {"id": "x"}', "tool.quant_guard.checkpoints: must be list, got dict*"),
    ('d["checkpoints"][0]["render"]["size"] = "64x"',
     "tool.quant_guard.checkpoints[[]0[]].render.size: must look like*"),
    ('d["checkpoints"][1]["limits"]["peak_vram"] = "10G"',
     "tool.quant_guard.checkpoints[[]1[]].limits.peak_vram: unknown unit 'G' in memory size '10G'; use one of*GiB*"),
    ('d["checkpoints"][1]["limits"]["step_time"] = "fast"',
     "tool.quant_guard.checkpoints[[]1[]].limits.step_time: cannot parse duration 'fast': expected a number and a "
     "unit, e.g. '9.5 s'"),
    ('d["checkpoints"][1]["limits"]["peak_vram"] = "1e308 TiB"',
     "tool.quant_guard.checkpoints[[]1[]].limits.peak_vram: memory size '1e308 TiB' must be *finite*"),
    ('d["thresholds"]["lpips"] = math.nan', "tool.quant_guard.thresholds.lpips: must be a finite number, got nan"),
    ('d["expected"]["psnr_margin_db"] = math.inf', "tool.quant_guard.expected.psnr_margin_db: must be*got inf"),
    ('d["cases"].append(dict(d["cases"][0]))', "tool.quant_guard.cases: duplicate id 'red-circle'"),
    ('d["cases"][1]["id"] = "Red-Circle"', "tool.quant_guard.cases: duplicate id 'Red-Circle'"),
    ('d["checkpoints"][1]["id"] = "tiny"', "tool.quant_guard.checkpoints: duplicate id 'tiny'"),
    ('d["checkpoints"][1]["candidate"]["dit"] = "a\\0b.safetensors"',
     "tool.quant_guard.checkpoints[[]1[]].candidate.dit: not a usable path*"),
    ('d["golden_dir"] = "gold\\0en"', "tool.quant_guard.golden_dir: not a usable path*"),
    ('d["cases"][0]["checkpoints"] = ["tiny", "nope"]',
     "tool.quant_guard.cases[[]0[]].checkpoints: unknown checkpoint 'nope'; declared: tiny, real"),
]
BAD_IDS = ["../evil", "a/b", "a\\b", ".hidden", "-x", "a b", "C:x", "", "x" * 65, "nul\0", "é", "a\nb", "~"]


@pytest.mark.parametrize(("change", "message"), CONFIG_FAULTS, ids=[c for c, _ in CONFIG_FAULTS])
def test_config_fault_names_file_and_key(change: str, message: str) -> None:
    """An unknown key, a wrong type, a bad unit and duplicate case ids are ConfigErrors naming the key."""
    from fnmatch import fnmatch

    with pytest.raises(ConfigError) as info:
        parse_config(_with(change), file=FILE)
    assert fnmatch(str(info.value), f"{FILE}: {message}"), str(info.value)


@pytest.mark.parametrize("bad_id", BAD_IDS)
@pytest.mark.parametrize("where", ["cases", "checkpoints"])
def test_ids_with_path_characters_are_refused(bad_id: str, where: str) -> None:
    """Config: ids with path characters: the id becomes a file name, so anything but
    letters, digits, '.', '_' and '-' (not first) is refused with the key and the rule."""
    data = valid_config()
    data[where][0]["id"] = bad_id
    with pytest.raises(ConfigError) as info:
        parse_config(data, file=FILE)
    assert str(info.value) == (f"{FILE}: tool.quant_guard.{where}[0].id: {bad_id!r} is not a valid id: use letters, "
                               "digits, '.', '_' or '-' (it becomes a file name), at most 64 characters")


@pytest.mark.parametrize(("checkpoint_id", "case_id"), [
    ("..", "x"), ("tiny", "../../outside"), ("/abs", "x"), ("tiny", "/etc/passwd"), ("a/../..", "b"),
])
def test_golden_store_never_writes_outside_its_folder(tmp_path: Path, checkpoint_id: str, case_id: str) -> None:
    """Config: ids with path characters, the last guard: keys that slip past the config
    are refused by the golden store before any file is written."""
    import numpy as np

    store = GoldenStore(tmp_path / "golden")
    with pytest.raises(GoldenError, match="would leave the golden directory"):
        store.write(GoldenKey(checkpoint_id, case_id, 0), np.zeros((32, 32, 3), np.uint8), {}, None)
    assert list(tmp_path.rglob("*")) == []


@PROPERTY
@given(st.text(max_size=80))
@example("..")
@example("a/b")
@example("a..b")
@example("x" * 64)
def test_any_accepted_id_stays_inside_the_golden_folder(text: str) -> None:
    """Config: ids with path characters, as a property: an id is either refused by the
    config (ConfigError naming the key) or makes a golden path one level inside its folder."""
    data = {"checkpoints": [{"id": text, "embedded": "tiny"}], "cases": [{"id": text, "prompt": "p"}]}
    try:
        config = parse_config(data, file=FILE)
    except ConfigError as exc:
        assert str(exc).startswith(f"{FILE}: tool.quant_guard.checkpoints[0].id: ")
        return
    root = Path("/golden-root")
    png = GoldenStore(root).png_path(GoldenKey(config.checkpoints[0].id, config.cases[0].id, 0))
    assert png.parent.parent == root and png.name == f"{text}-s0.png"


def test_bad_config_stops_pytest_before_anything_is_written(pytester: pytest.Pytester) -> None:
    """Config: through pytest, a duplicate id and a path-like id are usage errors naming
    the file and key; nothing is collected, rendered or written."""
    for bad, message in [
        ('id = "red"\nprompt = "p"\n[[tool.quant_guard.cases]]\nid = "red"\nprompt = "q"',
         "*pyproject.toml: tool.quant_guard.cases: duplicate id 'red'*"),
        ('id = "../../escape"\nprompt = "p"',
         "*pyproject.toml: tool.quant_guard.cases[[]0[]].id: '../../escape' is not a valid id*"),
    ]:
        pytester.makefile(".toml", pyproject="[tool.quant_guard]\n[[tool.quant_guard.checkpoints]]\nid = \"tiny\"\n"
                                             f"embedded = \"tiny\"\n[[tool.quant_guard.cases]]\n{bad}\n")
        result = pytester.runpytest("--update-golden")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([message])
        assert sorted(p.name for p in pytester.path.iterdir()) == ["pyproject.toml"]


# ---- properties: junk never escapes as anything but ConfigError ------------------------------

KEYS = sorted({"golden_dir", "report_dir", "thresholds", "expected", "checkpoints", "cases", "id", "embedded",
               "components", "candidate", "device", "cpu_offload", "t5_sequence_length", "marks", "limits", "render",
               "lpips", "ssim", "psnr", "enabled", "lpips_factor", "lpips_margin", "ssim_margin", "psnr_margin_db",
               "dit", "vae", "text_encoder_clip", "text_encoder_t5", "tokenizer_clip", "tokenizer_t5", "model_id",
               "origin_file_pattern", "scheme", "peak_vram", "peak_vram_counts", "step_time", "step_statistic", "warmup_steps", "steps",
               "size", "guidance", "prompt", "seeds"})
leaves = (st.none() | st.booleans() | st.integers() | st.integers(-3, 70) | st.floats()
          | st.text(max_size=12)
          | st.sampled_from(["tiny", "cpu", "cuda", "gpu", "64x64", "10 GiB", "9.5 s", "../x", "a\0b"])
          | st.datetimes() | st.dates() | st.times())
junk = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=5), max_leaves=25)


# tool.quant_guard, then .bare-key, ."quoted key" or [index] steps, then ": " and the message
KEY_PATH = re.compile(r'tool\.quant_guard(\.[A-Za-z0-9_-]+|\."(?:[^"\\]|\\.)*"|\[\d+\])*: \S')


def _check_outcome(data: Any) -> None:
    try:
        result = parse_config(data, file=FILE)
    except ConfigError as exc:
        assert KEY_PATH.match(str(exc).removeprefix(f"{FILE}: ")), str(exc)
        return
    assert isinstance(result, QuantGuardConfig)


@PROPERTY
@given(junk)
@example({"thresholds": {"lpips": math.nan}})
@example({1: 2, "a": 3})  # type: ignore[dict-item]
def test_junk_configuration_raises_only_config_error(data: Any) -> None:
    """Property over parse_config: arbitrary junk (nested tables, lists, every TOML value type)
    raises ConfigError starting with the file and naming a key, never another exception."""
    _check_outcome(data)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield from _paths(child, (*prefix, key))


@PROPERTY
@given(st.data())
def test_one_mutation_of_a_valid_config_raises_only_config_error(data: st.DataObject) -> None:
    """Property over parse_config, deep inside the schema: one node of a valid configuration
    replaced by junk, deleted, or joined by an unknown key."""
    config = valid_config()
    path = data.draw(st.sampled_from(list(_paths(config))[1:]))
    parent = config
    for key in path[:-1]:
        parent = parent[key]
    action = data.draw(st.sampled_from(["replace", "delete", "add-key"]))
    if action == "replace":
        parent[path[-1]] = data.draw(junk)
    elif action == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[data.draw(st.text(min_size=1, max_size=8))] = data.draw(leaves)
    _check_outcome(copy.deepcopy(config))


@PROPERTY
@given(st.binary(max_size=300) | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_junk_toml_file_raises_only_config_error(tmp_path_factory: pytest.TempPathFactory, content: bytes) -> None:
    """Property over load_config: any bytes in the file are a ConfigError naming the file."""
    file = tmp_path_factory.getbasetemp() / "junk.toml"
    file.write_bytes(b"[tool.quant_guard]\n" + content)
    try:
        load_config(file)
    except ConfigError as exc:
        assert str(exc).startswith(f"{file.resolve()}: "), str(exc)


# ---- unit strings ------------------------------------------------------------------------------

BYTE_UNITS = {"B": 1, "kB": 10**3, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
              "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
TIME_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0}
numbers = st.one_of(st.integers(1, 10**6).map(str),
                    st.decimals(min_value="0.001", max_value="100000", places=3, allow_nan=False).map(str))
space = st.sampled_from(["", " ", "  ", "\t"])


@PROPERTY
@given(numbers, space, st.sampled_from(sorted(BYTE_UNITS)), space, space)
def test_valid_byte_sizes_parse_to_their_value(number: str, gap: str, unit: str, before: str, after: str) -> None:
    """Property over parse_bytes: "<number><space><unit>" is number x unit, rounded to bytes."""
    value = float(number) * BYTE_UNITS[unit]
    text = f"{before}{number}{gap}{unit}{after}"
    if value < 1:
        with pytest.raises(UnitError, match="less than one byte"):
            parse_bytes(text)
    else:
        assert parse_bytes(text) == round(value)


@PROPERTY
@given(numbers, space, st.sampled_from(sorted(TIME_UNITS)))
def test_valid_durations_parse_to_their_value(number: str, gap: str, unit: str) -> None:
    """Property over parse_seconds: "<number><space><unit>" is number x unit seconds."""
    assert parse_seconds(f"{number}{gap}{unit}") == pytest.approx(float(number) * TIME_UNITS[unit], rel=1e-12)


@PROPERTY
@given(st.integers(1, 2**50))
def test_formatted_sizes_round_trip(n: int) -> None:
    """Property: what format_bytes prints (messages, reports) parses back to about the same size."""
    assert parse_bytes(format_bytes(n)) == pytest.approx(n, rel=0.005)


@PROPERTY
@given(st.floats(1e-9, 1e6))
def test_formatted_durations_round_trip(seconds: float) -> None:
    """Property: what format_seconds prints parses back to about the same duration (whole
    nanoseconds below a microsecond, three significant digits above)."""
    assert parse_seconds(format_seconds(seconds)) == pytest.approx(seconds, rel=0.05, abs=0.5e-9)


unit_junk = (st.text(max_size=20) | st.text(alphabet=string.digits + ".eE+- µBKMGTiksnmu\t", max_size=20)
             | st.none() | st.integers() | st.floats() | st.binary(max_size=8) | st.lists(st.integers(), max_size=2))


@PROPERTY
@given(unit_junk)
@example("1e308 TiB")
@example("1e308 min")
@example("0.1 B")
@example("10G")
@example("1e400 s")
@example("-1 s")
def test_unit_junk_raises_only_unit_error(text: Any) -> None:
    """Property over parse_bytes/parse_seconds: junk is a UnitError that quotes the input and
    gives an example; a result is always a positive, finite amount (at least one byte)."""
    for parse, example_text in ((parse_bytes, "10 GiB"), (parse_seconds, "9.5 s")):
        try:
            value = parse(text)
        except UnitError as exc:
            assert repr(text) in str(exc) or example_text in str(exc), str(exc)
            continue
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0
        if parse is parse_bytes:
            assert isinstance(value, int) and value >= 1
