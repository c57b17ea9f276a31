"""pytest hooks of the quant_guard report (registered through its own pytest11 entry point).

Every run with visual tests writes ``<report_dir>/results.json``; ``index.html`` is written
when something failed (``--qg-report=failed``, the default), always (``all``) or never
(``none``). Under pytest-xdist each worker builds its records and sends them to the controller
in ``workeroutput``; the controller merges them and writes once. With ``--html`` (pytest-html)
a failing visual test carries its difference image and metric table as extras.

Imports stay cheap: jinja2, PIL, numpy and torch are imported when a report is written.
"""

from __future__ import annotations

import argparse
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from quant_guard.config.limits import TrendSettings
from quant_guard.run.stash import RESULT_KEY, SESSION_KEY

if TYPE_CHECKING:
    from quant_guard.report.trends import TrendsView
    from quant_guard.run.session import QuantGuardSession

POLICIES = ("failed", "all", "none")
WORKER_KEY = "quant_guard_report_records"


def _policy(text: str) -> str:
    if text not in POLICIES:
        raise argparse.ArgumentTypeError(f"--qg-report must be one of {', '.join(POLICIES)}, got {text!r}")
    return text


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("quant_guard")
    group.addoption("--qg-report", metavar="WHEN", type=_policy, default=None,
                    help="when to write the HTML report index.html into the report directory: 'failed' "
                         "(default: when a visual test failed), 'all' (every run) or 'none'. results.json "
                         "is written on every run (ini: qg_report)")
    group.addoption("--qg-history", metavar="DIR", default=None,
                    help="append one metrics record per visual test of this run to the history folder DIR "
                         "(JSON Lines; overrides history_dir of the configuration; see quant-guard history). "
                         "index.html then shows each case's trend over the last runs")
    group.addoption("--qg-history-baseline", metavar="RUN", default=None,
                    help="the run the report's 'moved most' tables compare with: oldest (default: the oldest "
                         "run in the trend window), previous (the run before this one) or a run id "
                         "(overrides history_report.baseline)")
    parser.addini("qg_report", "when quant_guard writes index.html: failed, all or none", type="string",
                  default="failed")


class ReportPlugin:
    """Collects one record per visual test; the controller writes results.json and index.html."""

    def __init__(self, config: pytest.Config, session: QuantGuardSession, policy: str, *,
                 trend_settings: TrendSettings | None = None) -> None:
        self.config, self.session, self.policy = config, session, policy
        self.history_dir = session.history_dir  # where the run's records are appended (None: nowhere)
        self.trend_settings = trend_settings or TrendSettings()
        self.records: list[dict[str, Any]] = []
        self.written: dict[str, Path] = {}  # "results", "html", "history"
        self.errors: list[str] = []  # what went wrong while reporting (never fails the run)
        self._environments: dict[str, dict[str, Any]] = {}

    # ---- per test (where the test runs) -------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
        report = yield
        result = item.stash.get(RESULT_KEY, None)
        if report.when == "call" and result is not None:
            try:
                record = self._record(item, report, result)
                self.records.append(record)
                if report.failed and self._html_plugin_active():
                    from quant_guard.report.extras import failure_extras

                    report.extras = [*getattr(report, "extras", []), *failure_extras(record, self.session.report_dir)]
            except Exception as exc:  # reporting must not change the outcome of the test
                self.errors.append(f"{item.nodeid}: {type(exc).__name__}: {exc}")
        return report

    def _record(self, item: pytest.Item, report: pytest.TestReport, result: Any) -> dict[str, Any]:
        from quant_guard.run.case_record import build_record, environment

        spec = result.case.checkpoint
        if spec.id not in self._environments:
            self._environments[spec.id] = environment(self.session, spec)
        worker = getattr(self.config, "workerinput", {}).get("workerid")
        return build_record(result, self.session, nodeid=item.nodeid, outcome=report.outcome,
                            duration_s=report.duration, worker=worker, environment=self._environments[spec.id])

    def _html_plugin_active(self) -> bool:
        return self.config.pluginmanager.hasplugin("html") and bool(self.config.getoption("htmlpath", None))

    # ---- end of the run ---------------------------------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if hasattr(self.config, "workerinput"):  # an xdist worker: the controller writes
            self.config.workeroutput[WORKER_KEY] = {"records": self.records,  # type: ignore[attr-defined]
                                                    "errors": self.errors}
            return
        if self.records:
            self.write()

    def add_worker_output(self, output: dict[str, Any]) -> None:
        self.records.extend(output.get("records", []))
        self.errors.extend(output.get("errors", []))

    def write(self) -> None:
        from quant_guard.run.cases import expand_cases
        from quant_guard.report.html import INDEX_NAME, write_report
        from quant_guard.report.records import is_failure, results_document, sort_records, write_results

        report_dir = self.session.report_dir
        records = sort_records(self.records, [vc.id for vc in expand_cases(self.session.config)])
        document = results_document(records, config_source=self.session.config.source, report_dir=report_dir)
        try:
            self.written["results"] = write_results(report_dir, document)
        except Exception as exc:  # the report must not turn a finished run into a crash
            self.errors.append(f"{type(exc).__name__}: {exc}")
        self._append_history(records)  # before index.html: the trends end with this run
        if "results" not in self.written:
            return
        try:
            wanted = self.policy == "all" or (self.policy == "failed" and any(is_failure(r) for r in records))
            if wanted:
                self.written["html"] = write_report(report_dir, self._trends(records))
            else:  # an index.html left from an earlier run would describe another run
                (report_dir / INDEX_NAME).unlink(missing_ok=True)
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _append_history(self, records: list[dict[str, Any]]) -> None:
        """Append the run's records to the history folder. Only the controller (or the only
        process) gets here, with every worker's records merged, so a run is one file per host and
        process; workers appending their own files would work too, but would split a run."""
        if self.history_dir is None:
            return
        from quant_guard.store.history import append, from_result

        try:
            run = self.session.run
            self.written["history"] = append(self.history_dir, [from_result(r, run) for r in records], run)
        except Exception as exc:  # a full disk must not turn a finished run into a crash
            self.errors.append(f"history: {type(exc).__name__}: {exc}")

    def _trends(self, records: list[dict[str, Any]]) -> TrendsView | None:
        """The trends of this run's tests in the history folder (None without one)."""
        if self.history_dir is None or not self.history_dir.is_dir():
            return None
        from quant_guard.store.history import read
        from quant_guard.report.trends import build_trends

        try:
            return build_trends(read(self.history_dir), self.trend_settings, [str(r.get("id")) for r in records])
        except Exception as exc:  # e.g. a baseline run id that is not in the history
            self.errors.append(f"trends: {type(exc).__name__}: {exc}")
            return None

    @pytest.hookimpl(trylast=True)  # after quant_guard's own failure lines: the report path comes last
    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
        if not self.records and not self.errors:
            return
        from quant_guard.report.records import headline, is_failure

        self._scheme_summary(terminalreporter)
        terminalreporter.section("quant_guard report")
        if not self.session.results:  # xdist controller: quant_guard's own failure lines had no results
            for r in self.records:
                if is_failure(r):
                    terminalreporter.write_line(f"{r.get('id')}: {r.get('verdict')}: {headline(r)}")
        for error in self.errors:
            terminalreporter.write_line(f"quant_guard: report incomplete: {error}", red=True, bold=True)
        for kind, label in (("html", "report"), ("results", "results"), ("history", "history")):
            if kind in self.written:
                terminalreporter.write_line(f"quant_guard {label}: {_display(self.written[kind])}")


    def _scheme_summary(self, terminalreporter: Any) -> None:
        """The scheme comparison of each checkpoint that ran two or more schemes (report/schemes_view.py)."""
        try:
            from quant_guard.run.cases import expand_cases
            from quant_guard.report.records import sort_records
            from quant_guard.report.schemes_view import terminal_lines

            lines = terminal_lines(sort_records(self.records, [vc.id for vc in expand_cases(self.session.config)]))
        except Exception as exc:  # a summary must not turn a finished run into a crash
            self.errors.append(f"scheme summary: {type(exc).__name__}: {exc}")
            return
        if lines:
            terminalreporter.section("quant_guard schemes")
            for line in lines:
                terminalreporter.write_line(line)


class XdistHooks:
    """Registered only when pytest-xdist is present: its hook names are unknown otherwise."""

    def __init__(self, plugin: ReportPlugin) -> None:
        self.plugin = plugin

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        output = getattr(node, "workeroutput", {}).get(WORKER_KEY)
        if output:
            self.plugin.add_worker_output(output)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@pytest.hookimpl(trylast=True)  # after quant_guard.plugin has put the session into the stash
def pytest_configure(config: pytest.Config) -> None:
    policy = config.getoption("qg_report") or config.getini("qg_report") or "failed"
    if policy not in POLICIES:
        raise pytest.UsageError(f"quant_guard: ini option qg_report must be one of {', '.join(POLICIES)}, "
                                f"got {policy!r}")
    session = config.stash.get(SESSION_KEY, None)
    if session is None:
        return
    import dataclasses

    trend_settings = session.config.history_report
    if config.getoption("qg_history_baseline"):
        trend_settings = dataclasses.replace(trend_settings, baseline=config.getoption("qg_history_baseline"))
    plugin = ReportPlugin(config, session, policy, trend_settings=trend_settings)
    config.pluginmanager.register(plugin, "quant_guard_report_plugin")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistHooks(plugin), "quant_guard_report_xdist")
