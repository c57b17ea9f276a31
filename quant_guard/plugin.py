"""pytest wiring of quant_guard: options, markers, test generation, fixtures, summary.

pytest imports every installed plugin on every run (``pytest --version`` too), so this module
imports nothing heavy: torch, diffsynth, lpips and PIL are imported inside the gate, when a
visual test actually runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from quant_guard.run.cases import CaseResult, TestAddress, TestOverrides, Verdict, VisualCase, expand_cases
from quant_guard.config.project import ConfigError, QuantGuardConfig, declares_quant_guard, load_config
from quant_guard.config.limits import ReferenceMode
from quant_guard.run.session import QuantGuardSession, RunSettings
from quant_guard.run.stash import RESULT_KEY, SESSION_KEY
from quant_guard.config.thresholds import LIMIT_KEYS, LIMITS_BY_KEY, MEANING_KEY, ThresholdOverrides
from quant_guard.config.units import UnitError, parse_bytes, parse_seconds
from quant_guard.store.golden import WriteOutcome
from quant_guard.model.progress import ProgressPrinter
from quant_guard.model.quiet import quiet_library_noise
from quant_guard.run.xdist_support import (
    OUTCOMES_KEY,
    ControllerHooks,
    check_pinned,
    golden_group,
    one_owner_per_golden,
    pin_gpu,
    placement,
)

WITHHELD = "expected-withheld"  # beside the golden write counts a worker sends to the controller
EXPECTED_RECORDED, EXPECTED_KEPT = "expected-recorded", "expected-kept"  # and its expected-file counts
EXPECTED_REWRITTEN, EXPECTED_DROPPED = "expected-rewritten", "expected-dropped"  # and their lists
WORKER_EXTRAS = (WITHHELD, EXPECTED_RECORDED, EXPECTED_KEPT, EXPECTED_REWRITTEN, EXPECTED_DROPPED)

MARKERS = {
    "gpu": "gpu: needs a CUDA device; `pytest -m gpu` without one fails at session start instead of skipping",
    "qg_thresholds": "qg_thresholds(lpips=None, ssim=None, psnr=None, colour_delta_e_p95=None, sharpness_min=None, "
                     "..., meaning=None): override quant_guard's image thresholds for this test (any key of a "
                     "thresholds table)",
    "vram_budget": 'vram_budget("10 GiB"): peak memory limit of this test\'s candidate render (CUDA: what '
                   "the checkpoint's peak_vram_counts names, device used by default; CPU: the process's peak RSS)",
    "resident_vram_budget": 'resident_vram_budget("8 GiB"): limit on the memory resident when this test\'s '
                            "candidate render begins (CUDA: allocated device memory; CPU: process RSS)",
    "step_time_budget": 'step_time_budget("9.5 s"): per-step time limit of this test\'s candidate render '
                        "(median after warm-up unless configured otherwise)",
}
_THRESHOLD_KEYWORDS = (*LIMIT_KEYS, MEANING_KEY)


# ---- options ---------------------------------------------------------------------------------

def _bounded_float(low: float, high: float, what: str) -> Any:
    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{what} must be between {low} and {high}, got {value}")
        return value

    return convert


def _limit_option(text: str) -> tuple[str, float | str]:
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not value:
        raise argparse.ArgumentTypeError(f"--qg-limit must look like KEY=VALUE, e.g. colour_delta_e_p95=3.0, got {text!r}")
    if key == MEANING_KEY:
        return key, value
    limit = LIMITS_BY_KEY.get(key)
    if limit is None:
        raise argparse.ArgumentTypeError(f"--qg-limit: unknown key {key!r}; known: {', '.join(LIMIT_KEYS)}, {MEANING_KEY}")
    return key, _bounded_float(limit.low, limit.high, f"--qg-limit {key}")(value)


def _unit_option(parse: Any) -> Any:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except UnitError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--qg-shard must look like 2/4 (shard 2 of 4), got {text!r}") from None
    if not 1 <= index <= count:
        raise argparse.ArgumentTypeError(f"--qg-shard {text!r}: the shard number must be between 1 and {count}")
    return index, count


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("quant_guard", "quant_guard: visual regression gate for quantized diffusion checkpoints")
    group.addoption("--update-golden", action="store_true", default=False,
                    help="render the bf16 goldens of the selected visual tests and write them (and the "
                         "candidate's expected metrics) instead of checking against them")
    group.addoption("--qg-config", metavar="PATH", default=None,
                    help="TOML file with the quant_guard configuration (default: [tool.quant_guard] in "
                         "pyproject.toml; ini: qg_config)")
    group.addoption("--qg-golden-dir", metavar="DIR", default=None,
                    help="golden directory (overrides golden_dir of the configuration)")
    group.addoption("--qg-report-dir", metavar="DIR", default=None,
                    help="where failure images and reports go (overrides report_dir; default qg-report)")
    group.addoption("--qg-lpips", metavar="MAX", type=_bounded_float(0.0, 2.0, "--qg-lpips"), default=None,
                    help="maximum LPIPS for every visual test (overrides all configured thresholds)")
    group.addoption("--qg-ssim", metavar="MIN", type=_bounded_float(-1.0, 1.0, "--qg-ssim"), default=None,
                    help="minimum SSIM for every visual test")
    group.addoption("--qg-psnr", metavar="MIN_DB", type=_bounded_float(0.0, 200.0, "--qg-psnr"), default=None,
                    help="minimum PSNR in dB for every visual test")
    group.addoption("--qg-limit", metavar="KEY=VALUE", action="append", type=_limit_option, default=[],
                    help="a limit for every visual test, any key of a thresholds table, e.g. colour_delta_e_p95=3.0 or "
                         f"sharpness_min=0.9 (repeatable; keys: {', '.join(LIMIT_KEYS)}, {MEANING_KEY})")
    group.addoption("--qg-device", choices=("auto", "cpu", "cuda"), default=None,
                    help="device for every checkpoint (default: each checkpoint's setting, 'auto')")
    group.addoption("--qg-no-expected", action="store_true", default=False,
                    help="ignore the expected metrics recorded at the last --update-golden")
    group.addoption("--qg-max-vram", metavar="SIZE", type=_unit_option(parse_bytes), default=None,
                    help='peak memory limit of every candidate render, e.g. "10 GiB" (GiB = 2**30, GB = 10**9)')
    group.addoption("--qg-max-resident-vram", metavar="SIZE", type=_unit_option(parse_bytes), default=None,
                    help='limit on the memory resident when every candidate render begins, e.g. "8 GiB"')
    group.addoption("--qg-max-step-time", metavar="TIME", type=_unit_option(parse_seconds), default=None,
                    help='per-step time limit of every candidate render, e.g. "9.5 s", "250 ms"')
    group.addoption("--qg-progress-interval", metavar="SECONDS", type=_bounded_float(0, 86400, "--qg-progress-interval"),
                    default=10.0,
                    help="during a render, print step k/n, seconds per step and ETA at most every SECONDS "
                         "(default 10; 0 = every step). Shown on a TTY or with -v, never under -q or on "
                         "xdist workers")
    group.addoption("--qg-force", action="store_true", default=False,
                    help="with --update-golden: rewrite every golden, also those whose re-render is within the "
                         "drift tolerance of the stored one")
    group.addoption("--qg-reference", choices=("golden", "live"), default=None,
                    help="golden (default): judge the candidate against the stored golden, and render the bf16 "
                         "reference only when that fails; live: render the bf16 reference for every case and "
                         "judge against it (twice the renders, immune to drift). Config key: reference")
    group.addoption("--qg-shard", metavar="I/N", type=_shard, default=None,
                    help="run only shard I of N of the selected tests (round-robin over sorted test ids), "
                         "to spread a suite over N runners")
    parser.addini("qg_config", "path of the quant_guard TOML configuration, relative to the ini file",
                  type="string", default="")


# ---- configuration -------------------------------------------------------------------------

def _find_config_file(config: pytest.Config) -> Path | None:
    cli = config.getoption("qg_config")
    if cli:
        return Path(cli).resolve()
    ini = config.getini("qg_config")
    if ini:
        base = config.inipath.parent if config.inipath else config.rootpath
        return (base / ini).resolve()
    pyproject = config.rootpath / "pyproject.toml"
    if pyproject.is_file() and declares_quant_guard(pyproject):
        return pyproject
    return None


def _settings(config: pytest.Config) -> RunSettings:
    def path(option: str) -> Path | None:
        value = config.getoption(option, None)
        return Path(value).resolve() if value else None

    return RunSettings(
        update_golden=config.getoption("update_golden"),
        golden_dir=path("qg_golden_dir"),
        report_dir=path("qg_report_dir"),
        thresholds=_command_line_thresholds(config),
        device=config.getoption("qg_device"),
        use_expected=not config.getoption("qg_no_expected"),
        max_peak_memory_bytes=config.getoption("qg_max_vram"),
        max_resident_memory_bytes=config.getoption("qg_max_resident_vram"),
        max_step_time_s=config.getoption("qg_max_step_time"),
        reference=ReferenceMode(config.getoption("qg_reference")) if config.getoption("qg_reference") else None,
        force=config.getoption("qg_force"),
        history_dir=path("qg_history"),  # the option belongs to the report plugin
    )


def _command_line_thresholds(config: pytest.Config) -> ThresholdOverrides:
    """--qg-limit KEY=VALUE (the last one of a key wins), then --qg-lpips/--qg-ssim/--qg-psnr over them."""
    values: dict[str, Any] = dict(config.getoption("qg_limit") or [])
    for key in ("lpips", "ssim", "psnr"):
        if config.getoption(f"qg_{key}") is not None:
            values[key] = config.getoption(f"qg_{key}")
    return ThresholdOverrides(**values)


@pytest.hookimpl(tryfirst=True)  # the GPU pinning check before any other plugin's configure
def pytest_configure(config: pytest.Config) -> None:
    quiet_library_noise()
    where = placement(config)
    pin_gpu(where)
    check_pinned(where, str(getattr(config, "workerinput", {}).get("workerid", "")))
    for line in MARKERS.values():
        config.addinivalue_line("markers", line)
    if not config.pluginmanager.hasplugin("xdist"):  # each visual test names its golden's group
        config.addinivalue_line("markers", "xdist_group(name): pytest-xdist's test group (unused without xdist)")
    file = _find_config_file(config)
    qg_config: QuantGuardConfig | None = None
    if file is not None:
        try:
            qg_config = load_config(file)
        except ConfigError as exc:
            raise pytest.UsageError(f"quant_guard: {exc}") from None
    session = QuantGuardSession(qg_config, _settings(config), where) if qg_config else None
    config.stash[SESSION_KEY] = session
    if session is not None and config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        def add_worker_outcomes(outcomes: dict[str, Any]) -> None:
            session.expected_withheld += outcomes.get(WITHHELD, 0)
            session.expected_recorded += outcomes.get(EXPECTED_RECORDED, 0)
            session.expected_kept += outcomes.get(EXPECTED_KEPT, 0)
            session.expected_rewritten += outcomes.get(EXPECTED_REWRITTEN, [])
            session.expected_dropped.update(outcomes.get(EXPECTED_DROPPED, []))
            session.outcomes.update({WriteOutcome(k): v for k, v in outcomes.items() if k not in WORKER_EXTRAS})

        config.pluginmanager.register(ControllerHooks(add_worker_outcomes), "quant_guard_xdist_controller")
    if session is not None and session.settings.update_golden and config.pluginmanager.hasplugin("xdist"):
        one_owner_per_golden(config)


def pytest_sessionstart(session: pytest.Session) -> None:
    qg = session.config.stash.get(SESSION_KEY, None)
    if qg is not None:
        qg.progress = _progress_printer(session.config)


def _progress_printer(config: pytest.Config) -> ProgressPrinter | None:
    """Where render progress goes: the terminal when it is a TTY or with -v; nowhere under -q
    or on an xdist worker (its output is not a terminal). Written past the output capture, so a
    test's captured output and the JUnit XML never contain it."""
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    verbosity = config.get_verbosity()
    if terminal is None or hasattr(config, "workerinput") or verbosity < 0:
        return None
    if not terminal.isatty() and verbosity < 1:
        return None

    def write(line: str) -> None:
        if capture is None:
            terminal.write_line(line)
            return
        with capture.global_and_fixture_disabled():
            terminal.write_line(line)

    return ProgressPrinter(write, interval_s=config.getoption("qg_progress_interval"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    qg = session.config.stash.get(SESSION_KEY, None)
    workeroutput = getattr(session.config, "workeroutput", None)
    if qg is not None and workeroutput is not None:  # an xdist worker: report its golden writes
        workeroutput[OUTCOMES_KEY] = {**{k.value: v for k, v in qg.outcomes.items()}, WITHHELD: qg.expected_withheld,
                                      EXPECTED_RECORDED: qg.expected_recorded, EXPECTED_KEPT: qg.expected_kept,
                                      EXPECTED_REWRITTEN: qg.expected_rewritten,
                                      EXPECTED_DROPPED: sorted(qg.expected_dropped)}


# ---- collection ----------------------------------------------------------------------------

def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "qg_case" not in metafunc.fixturenames:
        return
    session = metafunc.config.stash[SESSION_KEY]
    if session is None:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid} uses qg_case, but no quant_guard configuration was found: add a "
            "[tool.quant_guard] table to pyproject.toml or pass --qg-config PATH")
    cases = expand_cases(session.config)
    if not cases:
        raise pytest.UsageError(f"quant_guard: {session.config.source} declares no cases for its checkpoints")
    params = [pytest.param(vc, id=vc.id, marks=[*(getattr(pytest.mark, m) for m in vc.checkpoint.marks),
                                                pytest.mark.xdist_group(golden_group(vc.key.checkpoint_id, vc.key.case_id,
                                                                                   vc.key.seed))])
              for vc in cases]
    metafunc.parametrize("qg_case", params)


def _marker_overrides(item: pytest.Item) -> TestOverrides:
    return TestOverrides(thresholds=_marker_thresholds(item),
                         peak_memory_bytes=_marker_unit(item, "vram_budget", parse_bytes),
                         resident_memory_bytes=_marker_unit(item, "resident_vram_budget", parse_bytes),
                         step_time_s=_marker_unit(item, "step_time_budget", parse_seconds))


def _marker_unit(item: pytest.Item, name: str, parse: Any) -> Any:
    marker = item.get_closest_marker(name)
    if marker is None:
        return None
    if len(marker.args) != 1 or marker.kwargs:
        raise pytest.UsageError(f'{item.nodeid}: {name} takes one string argument, e.g. {name}("{_EXAMPLES[name]}")')
    try:
        return parse(marker.args[0])
    except UnitError as exc:
        raise pytest.UsageError(f"{item.nodeid}: {name}: {exc}") from None


_EXAMPLES = {"vram_budget": "10 GiB", "resident_vram_budget": "8 GiB", "step_time_budget": "9.5 s"}


def _marker_thresholds(item: pytest.Item) -> ThresholdOverrides:
    marker = item.get_closest_marker("qg_thresholds")
    if marker is None:
        return ThresholdOverrides()
    unknown = set(marker.kwargs) - set(_THRESHOLD_KEYWORDS)
    if marker.args or unknown:
        raise pytest.UsageError(f"{item.nodeid}: qg_thresholds takes only keywords {', '.join(_THRESHOLD_KEYWORDS)}; "
                                f"got args {marker.args!r}, unknown {sorted(unknown)}")
    values: dict[str, Any] = {}
    for name, value in marker.kwargs.items():
        if name == MEANING_KEY:
            if not isinstance(value, str) or not value.strip():
                raise pytest.UsageError(f"{item.nodeid}: qg_thresholds(meaning=...) must name a semantic scorer or "
                                        f'"off", got {value!r}')
            values[name] = value
            continue
        limit = LIMITS_BY_KEY[name]
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise pytest.UsageError(f"{item.nodeid}: qg_thresholds({name}=...) must be a number, got {value!r}")
        if not limit.low <= value <= limit.high:
            raise pytest.UsageError(f"{item.nodeid}: qg_thresholds({name}=...) must be between {limit.low} and "
                                    f"{limit.high}, got {value}")
        values[name] = float(value)
    return ThresholdOverrides(**values)


@pytest.hookimpl(trylast=True)  # after -m / -k deselection
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    shard = config.getoption("qg_shard")
    if shard is not None:
        index, count = shard
        order = {nodeid: i for i, nodeid in enumerate(sorted(item.nodeid for item in items))}
        keep = [item for item in items if order[item.nodeid] % count == index - 1]
        config.hook.pytest_deselected(items=[item for item in items if item not in keep])
        items[:] = keep
    for item in items:
        _marker_overrides(item)  # validate early: a typo is a usage error, not a late failure
    _probe_schemes(config, items)
    _require_ocr(items)
    if any(item.get_closest_marker("gpu") for item in items):
        import torch  # only when GPU tests are selected

        if not torch.cuda.is_available():
            gpu = [item.nodeid for item in items if item.get_closest_marker("gpu")]
            raise pytest.UsageError(
                f"quant_guard: {len(gpu)} selected test(s) are marked gpu (e.g. {gpu[0]}) but torch sees no CUDA "
                "device. Run them on a GPU machine, or deselect them with -m 'not gpu'.")


def _require_ocr(items: list[pytest.Item]) -> None:
    """A selected case that expects text (``expect_text``) needs the OCR engine: without it the
    run stops at collection saying how to install it (never a skip, never a silent pass)."""
    wanting = [vc.id for item in items if isinstance(vc := _visual_case(item), VisualCase) and vc.case.expect_text]
    if not wanting:
        return
    from quant_guard.judge.text import ocr_problem

    problem = ocr_problem()
    if problem:
        raise pytest.UsageError(f"quant_guard: {len(wanting)} selected test(s) check text (expect_text, e.g. "
                                f"{wanting[0]}), but {problem}")


def _visual_case(item: pytest.Item) -> Any:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("qg_case") if callspec is not None else None


def _probe_schemes(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A selected quantization scheme that cannot run here (backend missing, kernel needing
    another device) stops the run at collection, naming why (scheme_probe.py)."""
    session = config.stash.get(SESSION_KEY, None)
    selected = {}
    for item in items:
        callspec = getattr(item, "callspec", None)
        vc = callspec.params.get("qg_case") if callspec is not None else None
        if isinstance(vc, VisualCase) and any(vc.scheme.component(n).quantization for n in vc.scheme.targets):
            selected.setdefault((vc.checkpoint.id, vc.scheme.id), vc)
    if not selected or session is None:
        return
    from quant_guard.model.checkpoints import CheckpointError
    from quant_guard.model.scheme_probe import probe

    problems = []
    for vc in selected.values():
        try:
            device = session.device(vc.checkpoint)
        except CheckpointError:
            continue  # no such device here: every test of the checkpoint fails saying so
        why = probe(vc.scheme, device)
        if why:
            problems.append(f"checkpoint {vc.checkpoint.id!r}, scheme {vc.scheme.id!r}: {why}")
    if problems:
        raise pytest.UsageError("quant_guard: selected schemes cannot run here:\n  " + "\n  ".join(problems)
                                + "\nInstall what they need, run them on a device that can, or deselect them (-k).")


# ---- fixtures --------------------------------------------------------------------------------

class Gate:
    """What a visual test calls: ``qg_gate.check(qg_case)``."""

    def __init__(self, session: QuantGuardSession, item: pytest.Item) -> None:
        self._session, self._item = session, item

    def check(self, case: VisualCase) -> CaseResult:
        __tracebackhide__ = True
        from quant_guard.run.gate import budget_section, run_case

        result = self._session.judge_history(
            run_case(self._session, case, _marker_overrides(self._item), _address(self._item)))
        self._session.record(result)
        self._item.stash[RESULT_KEY] = result
        if result.budget_checks:
            # its own report section, so a budget violation reads apart from an image failure
            self._item.add_report_section("call", "quant_guard budget", budget_section(result.budget_checks))
        if result.history is not None:
            from quant_guard.judge.history_alarm import AlarmStatus
            from quant_guard.run.history_gate import HistoryDriftWarning

            self._item.add_report_section("call", "quant_guard history", result.history.message)
            if result.history.status is AlarmStatus.WARN:
                self._item.warn(HistoryDriftWarning(result.history.message))
        if not result.passed:
            pytest.fail(f"{case.id}: {result.reason}", pytrace=False)
        return result


def _address(item: pytest.Item) -> TestAddress:
    from quant_guard.run.gate import display_path

    _file, _, name = item.nodeid.partition("::")
    return TestAddress(display_path(item.path), name, gpu=item.get_closest_marker("gpu") is not None)


@pytest.fixture(scope="session")
def qg_session(request: pytest.FixtureRequest) -> Generator[QuantGuardSession, None, None]:
    """The quant_guard session: configuration, lazily built pipelines, golden store."""
    session = request.config.stash[SESSION_KEY]
    if session is None:
        raise pytest.UsageError("no quant_guard configuration: add [tool.quant_guard] to pyproject.toml "
                                "or pass --qg-config PATH")
    yield session
    session.close()


@pytest.fixture
def qg_gate(qg_session: QuantGuardSession, request: pytest.FixtureRequest) -> Gate:
    """Checks a visual case against its golden (or updates the golden with --update-golden)."""
    return Gate(qg_session, request.node)


@pytest.fixture
def qg_sweep(qg_session: QuantGuardSession) -> Any:
    """The sensitivity sweep on a checkpoint of the configuration, in this session's pipeline:
    ``result = qg_sweep("tiny", "bitsandbytes_nf4", target_psnr=38.0)`` measures every layer
    group, recommends which to keep in bf16, writes sweep.json and sweep.html under the report
    directory and returns the ``quant_guard.tools.sweep.SweepResult``."""
    import functools

    from quant_guard.tools.sweep_outputs import sweep_checkpoint

    return functools.partial(sweep_checkpoint, qg_session)


# ---- reporting -------------------------------------------------------------------------------

def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is None:
        return
    if session.settings.update_golden and (session.results or session.outcomes or session.expected_withheld):
        terminalreporter.write_line(session.update_summary())
        for line in session.expected_summary():
            terminalreporter.write_line(line)
    _environment_summary(terminalreporter, session)
    failed = [r for r in session.results if not r.passed]
    missing = [r.case.id for r in failed if r.verdict is Verdict.NO_GOLDEN]
    if failed:
        terminalreporter.section("quant_guard failures")
        for r in failed:
            if r.verdict is Verdict.NO_GOLDEN:
                continue  # one line for all of them, below
            failing = [c.describe() for c in (*r.checks, *r.budget_checks) if not c.passed]
            why = "; ".join(failing) or (r.reason.splitlines()[0] if r.reason else "")
            terminalreporter.write_line(f"{r.case.id}: {r.verdict.value}: {why}")
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        terminalreporter.write_line(f"{len(missing)} test(s) have no golden yet ({shown}): make them with "
                                    "`pytest --update-golden` and the same selection, then commit the golden "
                                    "folder")


def _environment_summary(terminalreporter: Any, session: QuantGuardSession) -> None:
    """Which fingerprint fields differ from those recorded with the goldens, once per distinct
    difference, with the tests it concerns."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for r in session.results:
        if r.fingerprint:
            groups.setdefault(tuple(d.describe() for d in r.fingerprint), []).append(r.case.id)
    if not groups:
        return
    terminalreporter.section("quant_guard environment")
    for lines, ids in groups.items():
        shown = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
        terminalreporter.write_line(f"this run's environment differs from the golden's ({len(ids)} test(s): {shown}):")
        for line in lines:
            terminalreporter.write_line(f"  {line}")
