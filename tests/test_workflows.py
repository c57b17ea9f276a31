"""The GitHub Actions workflows and their scripts under ci/.

- every workflow passes actionlint (installed by the `test` extra; missing in CI is a failure);
- the pull-request workflow runs exactly the README's two set-up commands, and every command a
  workflow runs is documented in the README;
- the nightly and re-baseline workflows are wired as the README says (self-hosted GPU runner,
  schedule/dispatch inputs, caches that match the download folders, shards, artifacts);
- ci/nightly.sh runs a shard of the tiny suite on the CPU and writes JUnit XML, the report and
  the step summary; ci/rebaseline.sh proposes new goldens on a branch and never pushes to main;
- ci/step_summary.py turns a results.json of a real run into a Markdown table;
- the nightly keeps its metrics history in the actions cache: ci/history.py snapshots, collects,
  merges and prunes it, and the summary job writes the trend page and "Moved since last night".
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from drift_support import OTHER_MACHINE, copy_perturbed
from helpers import STRICT_CASE
import yaml

from quant_guard.store import history as h

ROOT = Path(__file__).resolve().parents[1]
# the repository's tiny checkpoint lists its schemes; the script tests run its float8_e4m3fn tests
FLOAT8 = "tiny-float8_e4m3fn"
WORKFLOWS = ROOT / ".github" / "workflows"
README = ROOT / "README.md"
ACTIONLINT_CONFIG = "self-hosted-runner:\n  labels: [gpu]\n"  # the GPU runners' custom label


# ---- helpers -----------------------------------------------------------------------------------

def load_workflow(name: str) -> dict[str, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    if True in data:  # YAML 1.1 reads the key `on` as a boolean
        data["on"] = data.pop(True)
    return data


def steps(workflow: dict[str, Any], job: str) -> list[dict[str, Any]]:
    return list(workflow["jobs"][job]["steps"])


def run_commands(workflow: dict[str, Any]) -> list[str]:
    return [step["run"].strip() for job in workflow["jobs"].values() for step in job["steps"] if "run" in step]


def uses(workflow: dict[str, Any], job: str, action: str) -> list[dict[str, Any]]:
    return [s for s in steps(workflow, job) if str(s.get("uses", "")).startswith(action + "@")]


def readme_section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}[^\n]*\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README.md has no section '## {title}'"
    return match.group(1)


def code_lines(markdown: str) -> list[str]:
    """Lines of the fenced code blocks, comments stripped."""
    lines = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", markdown, re.M | re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def linter(name: str) -> str:
    """A linter from the test extra (its wheel ships the binary): skipped on a developer's machine
    that lacks it, a failure in CI, where everything must be linted."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        message = f"{name} is not installed (pip install -e '.[test]')"
        if os.environ.get("CI"):
            pytest.fail(message + ": CI must lint the workflows and scripts")
        pytest.skip(message)
    return found


def actionlint() -> str:
    return linter("actionlint")


def lint(paths: list[Path], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "actionlint.yaml"
    config.write_text(ACTIONLINT_CONFIG)
    return subprocess.run([actionlint(), "-no-color", "-oneline", "-config-file", str(config), *map(str, paths)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def load_step_summary() -> ModuleType:
    spec = importlib.util.spec_from_file_location("qg_step_summary", ROOT / "ci" / "step_summary.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def script_env(**extra: str) -> dict[str, str]:
    """Environment of a ci/*.sh run outside GitHub Actions."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "QG_", "PYTEST_"))}
    env.update(OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1", VENV=str(Path(sys.executable).parent.parent))
    env.update(extra)
    return env


# ---- actionlint ----------------------------------------------------------------------------------

def test_every_workflow_passes_actionlint(tmp_path: Path) -> None:
    files = sorted(WORKFLOWS.glob("*.yml")) + sorted(WORKFLOWS.glob("*.yaml"))
    assert {f.name for f in files} >= {"ci.yml", "nightly-gpu.yml", "rebaseline.yml"}
    result = lint(files, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_reports_a_broken_workflow(tmp_path: Path) -> None:
    """The lint above is not vacuous: the same call fails on a workflow with mistakes."""
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(textwrap.dedent("""
        on: workflow_dispatch
        jobs:
          gate:
            runs-on: [self-hosted, gpu]
            steps:
              - run: echo "${{ inputs.no_such_input }}"
              - uses: actions/checkout@v5
                with: {no_such_option: 1}
        """))
    result = lint([broken], tmp_path)
    assert result.returncode != 0
    assert "no_such_input" in result.stdout and "no_such_option" in result.stdout


def test_ci_scripts_pass_shellcheck() -> None:
    shellcheck = linter("shellcheck")
    scripts = sorted((ROOT / "ci").glob("*.sh"))
    assert {p.name for p in scripts} >= {"common.sh", "nightly.sh", "rebaseline.sh"}
    result = subprocess.run([shellcheck, "-x", *map(str, scripts)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# ---- what the workflows run ----------------------------------------------------------------------

def test_pull_request_workflow_runs_exactly_the_readme_commands() -> None:
    readme = code_lines(readme_section("Set up and run"))
    assert readme == ["bash ci/install.sh && .venv/bin/pytest tests/visual", "bash ci/install.sh && .venv/bin/pytest"]
    workflow = load_workflow("ci.yml")
    assert "pull_request" in workflow["on"]
    assert run_commands(workflow) == readme
    job = workflow["jobs"]["tests"]
    assert "self-hosted" not in str(job["runs-on"])  # a CPU runner: the tiny suite needs no GPU
    assert uses(workflow, "tests", "actions/setup-python")[0]["with"]["python-version"] == "3.11"


def test_every_workflow_command_is_documented_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    documented = code_lines(text) + re.findall(r"`([^`\n]+)`", text)  # code blocks and inline code
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for command in run_commands(load_workflow(path.name)):
            assert command in documented, f"{path.name} runs {command!r}, which README.md does not show"


def test_nightly_workflow_is_wired_as_documented() -> None:
    workflow = load_workflow("nightly-gpu.yml")
    triggers = workflow["on"]
    assert triggers["schedule"][0]["cron"]
    assert {"checkpoint", "pytest-args"} <= set(triggers["workflow_dispatch"]["inputs"])
    gate = workflow["jobs"]["gate"]
    assert gate["runs-on"] == ["self-hosted", "gpu"]
    shards = gate["strategy"]["matrix"]["shard"]
    assert gate["strategy"]["fail-fast"] is False
    assert len(shards) >= 2 and shards == list(range(1, len(shards) + 1))

    run = next(s for s in steps(workflow, "gate") if s.get("run") == "bash ci/nightly.sh run")
    assert run["env"]["QG_SHARDS"] == str(len(shards)) and run["env"]["QG_SHARD"] == "${{ matrix.shard }}"
    assert run["env"]["QG_CHECKPOINT"] == "${{ inputs.checkpoint }}"
    assert run["env"]["QG_PYTEST_ARGS"] == "${{ inputs.pytest-args }}"
    assert "bash ci/install.sh" in run_commands(workflow)

    # the cache holds quant_guard's cache; never the model weights (about 34 GB, over GitHub's 10 GB)
    cached = {s["with"]["path"] for s in uses(workflow, "gate", "actions/cache")}
    assert cached == {".qg-cache"}
    install = next(s for s in steps(workflow, "gate") if s.get("run") == "bash ci/install.sh")
    assert install["env"]["QG_TORCH_CUDA"] == "${{ vars.QG_TORCH_CUDA || '' }}"
    assert workflow["env"]["DIFFSYNTH_MODEL_BASE_PATH"].endswith("format('{0}/models', github.workspace) }}")
    assert workflow["env"]["QUANT_GUARD_CACHE"] == "${{ github.workspace }}/.qg-cache"

    upload = uses(workflow, "gate", "actions/upload-artifact")[0]
    assert upload["if"] == "always()" and upload["with"]["path"].rstrip("/") == run["env"]["QG_OUT"]
    summary = workflow["jobs"]["summary"]
    assert summary["needs"] == "gate" and summary["if"] == "always()"
    download = uses(workflow, "summary", "actions/download-artifact")[0]["with"]
    assert download["pattern"].rstrip("*") in upload["with"]["name"]
    assert f"bash ci/nightly.sh summary {download['path']}" in run_commands(workflow)


def test_nightly_script_runs_pytest_m_gpu_with_junit_and_the_report() -> None:
    script = (ROOT / "ci" / "nightly.sh").read_text()
    for needed in ('-m "${QG_MARKERS:-gpu}"', "--junitxml=", "--qg-report-dir=", "--qg-report=all",
                   '--qg-shard "$shard/$shards"', "ci/step_summary.py"):
        assert needed in script


def test_nightly_workflow_keeps_the_history_in_the_cache_under_dated_keys() -> None:
    workflow = load_workflow("nightly-gpu.yml")
    directory = workflow["env"]["QG_HISTORY_DIR"]
    for job in ("gate", "summary"):  # both restore the newest history by its prefix, neither saves it implicitly
        (restore,) = uses(workflow, job, "actions/cache/restore")
        assert restore["with"]["path"] == directory and restore["with"]["restore-keys"] == "qg-history-"
        assert not [s for s in uses(workflow, job, "actions/cache") if s["with"]["path"] == directory]
    names = [s.get("name") or s.get("uses") for s in steps(workflow, "summary")]
    summary = next(s for s in steps(workflow, "summary") if s.get("run") == "bash ci/nightly.sh summary shards")
    (save,) = uses(workflow, "summary", "actions/cache/save")
    assert save["with"] == {"path": directory, "key": f"${{{{ steps.{summary['id']}.outputs.history-key }}}}"}
    assert "always()" in save["if"]
    assert names.index(save["name"]) > names.index(summary["name"]) > names.index("actions/download-artifact@v7")
    (trends,) = [u for u in uses(workflow, "summary", "actions/upload-artifact")
                 if u["with"]["name"] == "qg-nightly-trends"]
    assert {line.rstrip("/") for line in trends["with"]["path"].split()} == {summary["env"]["QG_TRENDS_OUT"], directory}
    assert workflow["permissions"] == {"contents": "read"}  # the cache needs no write access to the repository
    sparse = uses(workflow, "summary", "actions/checkout")[0]["with"]["sparse-checkout"].split()
    assert sparse == ["ci", "quant_guard"]  # ci/history.py and the trend page import quant_guard from the checkout


def test_rebaseline_workflow_is_manual_and_never_pushes_to_main() -> None:
    workflow = load_workflow("rebaseline.yml")
    assert set(workflow["on"]) == {"workflow_dispatch"}
    assert workflow["permissions"] == {"contents": "read"}  # write access only in the job that needs it
    job = workflow["jobs"]["rebaseline"]
    assert job["runs-on"] == ["self-hosted", "gpu"]
    assert run_commands(workflow) == ["bash ci/install.sh", "bash ci/rebaseline.sh"]
    upload = uses(workflow, "rebaseline", "actions/upload-artifact")[0]
    assert upload["if"] == "always()"
    script = (ROOT / "ci" / "rebaseline.sh").read_text()
    assert "--update-golden" in script
    pushes = [line.strip() for line in script.splitlines() if re.search(r"\bgit push\b", line)]
    assert pushes == ['git push origin "HEAD:refs/heads/$branch"  # the new branch only, never $base']
    assert 'branch="rebaseline/' in script


def test_no_workflow_caches_the_model_weights() -> None:
    for name in ("nightly-gpu.yml", "rebaseline.yml"):
        workflow = load_workflow(name)
        for job in workflow["jobs"]:
            assert all(s["with"]["path"] != "models" for s in uses(workflow, job, "actions/cache")), name
        install = next(s for job in workflow["jobs"] for s in steps(workflow, job) if s.get("run") == "bash ci/install.sh")
        assert "QG_TORCH_CUDA" in install["env"], name


def test_two_jobs_on_one_host_take_turns_on_the_gpu(tmp_path: Path) -> None:
    """qg_pytest holds a host-wide lock (QG_GPU_LOCK): a second job's pytest starts only after the
    first one's has ended, and says that it waits."""
    log = tmp_path / "log"
    fake = tmp_path / "pytest"
    # job a's pytest holds the GPU until the test has seen job b wait (or 30 s pass)
    release = tmp_path / "release"
    fake.write_text(f'#!/bin/sh\necho "start $1" >> "{log}"\n'
                    f'for i in $(seq 300); do [ "$1" = b ] || [ -e "{release}" ] && break; sleep 0.1; done\n'
                    f'echo "end $1" >> "{log}"\n')
    fake.chmod(0o755)
    env = script_env(PYTEST=str(fake), QG_GPU_LOCK=str(tmp_path / "gpu.lock"))

    def job(name: str) -> subprocess.Popen[str]:
        return subprocess.Popen(["bash", "-c", f"source ci/common.sh && qg_pytest {name}"], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, text=True)

    first = job("a")
    _wait_for(lambda: log.is_file() and "start a" in log.read_text())
    second = job("b")
    assert second.stdout is not None
    waiting = second.stdout.readline()  # printed before it blocks on the lock
    release.touch()
    outputs = [first.communicate(timeout=60)[0], waiting + second.communicate(timeout=60)[0]]
    assert [first.returncode, second.returncode] == [0, 0]
    assert log.read_text().split("\n")[:-1] == ["start a", "end a", "start b", "end b"]
    assert "another quant_guard job on this host holds" not in outputs[0]
    assert "another quant_guard job on this host holds" in outputs[1]


def _wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_install_refuses_an_unknown_torch_build(tmp_path: Path) -> None:
    """QG_TORCH_CUDA is checked before anything is installed from it."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    fake_python = venv / "bin" / "python"
    fake_python.write_text("#!/bin/sh\nexit 0\n")  # pip calls succeed without installing anything
    fake_python.chmod(0o755)
    done = subprocess.run(["bash", "ci/install.sh"], cwd=ROOT, env=script_env(VENV=str(venv), QG_TORCH_CUDA="cuda12"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "QG_TORCH_CUDA must be cpu or cuNNN (e.g. cu126), got 'cuda12'" in done.stderr


# ---- the scripts, run for real on the tiny checkpoint ------------------------------------------

@pytest.mark.slow
def test_nightly_script_runs_a_shard_on_the_cpu(tmp_path: Path) -> None:
    out, summary = tmp_path / "out", tmp_path / "summary.md"
    # goldens made on "another machine": the gate must pass on pixels a few levels off its renders
    golden = copy_perturbed(ROOT / "golden", tmp_path / "golden", environment=OTHER_MACHINE)
    history = tmp_path / "qg-history"  # as restored from the cache: last night's file
    h.append(history, [history_record("lastnight", f"{FLOAT8}-red-circle-blue-s0", 0.5)], run_of("lastnight"))
    env = script_env(QG_MARKERS="not gpu", QG_CHECKPOINT="tiny", QG_SHARD="1", QG_SHARDS="2", QG_OUT=str(out),
                     QG_PYTEST_ARGS=f"tests/visual -p no:cacheprovider -k {FLOAT8}-red-circle-blue --qg-golden-dir={golden}",
                     QG_WORKERS="1", GITHUB_STEP_SUMMARY=str(summary), QG_HISTORY_DIR=str(history),
                     QG_RUN_ID="tonight")
    proc = subprocess.run(["bash", "ci/nightly.sh", "run"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert f"-k ([tiny-) and ({FLOAT8}-red-circle-blue)" in proc.stdout and "--qg-shard 1/2" in proc.stdout
    results = json.loads((out / "report" / "results.json").read_text())
    ids = [r["id"] for r in results["results"]]
    assert ids == [f"{FLOAT8}-red-circle-blue-s0", f"{FLOAT8}-red-circle-blue-s2"]  # shard 1 of the sorted 3
    assert (out / "report" / "index.html").is_file()  # --qg-report=all
    junit = (out / "junit.xml").read_text()
    assert 'tests="2"' in junit and 'failures="0"' in junit
    text = summary.read_text()
    assert "## quant_guard nightly (shard 1/2)" in text
    assert all(f"| `{test_id}` | ✅ passed |" in text for test_id in ids)
    # the history: judged against and appended to; this shard's own file copied for the summary job
    (added,) = (out / "history").glob("*.jsonl")
    assert sorted(r.test_id for r in h.read_file(added)[0]) == ids and len(list(history.glob("*.jsonl"))) == 2
    assert "### Moved since last night" in text and "**tiny**: lastnight → tonight" in text
    assert re.search(rf"\| {FLOAT8}-red-circle-blue-s0 \| 0\.5000 \| 0\.\d{{4}} \| -\d+\.\d% \|", text)
    assert (out / "report" / "index.html").read_text().count('class="sparkline"') == 8  # 2 tests x 4 metrics

    # a shard that the selection leaves empty passes; the summary job then sees no results there
    empty = subprocess.run(["bash", "ci/nightly.sh", "run"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                           env={**env, "QG_SHARD": "2", "QG_OUT": str(tmp_path / "empty"),
                                "QG_PYTEST_ARGS": f"tests/visual -p no:cacheprovider -k {FLOAT8}-red-circle-blue-s0"})
    assert empty.returncode == 0, empty.stdout[-4000:]
    assert "shard 2/2: the selection left no tests" in empty.stdout

    # the summary job: merged over the shards' artifact folders, failing when nothing ran at all
    shards = tmp_path / "shards"
    shutil.copytree(out, shards / "qg-nightly-shard-1")
    shutil.copytree(tmp_path / "empty", shards / "qg-nightly-shard-2")
    merged = subprocess.run(["bash", "ci/nightly.sh", "summary", str(shards)], cwd=ROOT, capture_output=True,
                            text=True, env=script_env())
    assert merged.returncode == 0 and "2 visual tests: 2 passed, 0 failed" in merged.stdout
    assert "qg-nightly-shard-2/report`: no visual test ran there" in merged.stdout
    nothing = subprocess.run(["bash", "ci/nightly.sh", "summary", str(shards / "qg-nightly-shard-2")], cwd=ROOT,
                             capture_output=True, text=True, env=script_env())
    assert nothing.returncode == 1 and "No visual test results." in nothing.stdout


def history_record(run_id: str, test_id: str, lpips: float, day: int = 2) -> h.HistoryRecord:
    return h.HistoryRecord(run_id=run_id, date=f"2026-11-{day:02d}T02:00:00+00:00", host="runner", commit=None,
                           test_id=test_id, checkpoint="tiny", scheme="float8_e4m3fn", case=test_id[5:-3], seed=0,
                           verdict="passed", metrics={"lpips": lpips, "psnr": 30.0}, env_hash="e1",
                           environment={"device": "cuda"})


def run_of(run_id: str, day: int = 2) -> h.RunInfo:
    return h.RunInfo(run_id=run_id, date=f"2026-11-{day:02d}T02:00:00+00:00", host="runner", commit=None)


def history_script(*args: str | Path) -> subprocess.CompletedProcess[str]:
    # -I -S: the standard library and this checkout only, as on the summary job's bare runner
    return subprocess.run([sys.executable, "-I", "-S", str(ROOT / "ci" / "history.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def test_history_script_collects_a_runs_files_and_merges_shards_without_losing_a_line(tmp_path: Path) -> None:
    cache = tmp_path / "qg-history"
    last_night = h.append(cache, [history_record("n1", "tiny-a-s0", 0.01, day=1)], run_of("n1", 1))
    before = tmp_path / "before"
    before.write_text(history_script("snapshot", cache).stdout)
    assert before.read_text() == f"{last_night.name}\n"
    tonight = cache / "runner-n2-1.jsonl"  # what the shard's pytest appends
    tonight.write_text(history_record("n2", "tiny-a-s0", 0.02).to_json() + "\n")
    collected = history_script("collect", cache, before, tmp_path / "out" / "history")
    assert collected.returncode == 0 and "1 new file(s)" in collected.stdout
    assert [p.name for p in (tmp_path / "out" / "history").iterdir()] == [tonight.name]

    # the summary job: the restored cache plus two shards' folders
    tonight.unlink()  # the summary job's cache is last night's
    dest = tmp_path / "merged"
    shutil.copytree(cache, dest)
    shard1, shard2 = tmp_path / "shards" / "1" / "history", tmp_path / "shards" / "2" / "history"
    shutil.copytree(tmp_path / "out" / "history", shard1)
    shard2.mkdir(parents=True)
    (shard2 / "runner-n2-2.jsonl").write_text(history_record("n2", "tiny-b-s0", 0.03).to_json() + "\n")
    (shard2 / last_night.name).write_bytes(last_night.read_bytes())  # the same file again: skipped
    (shard2 / "runner-n2-1.jsonl").write_text(history_record("n2", "tiny-c-s0", 0.04).to_json() + "\n")  # a clash
    merged = history_script("merge", dest, shard1, shard2)
    assert merged.returncode == 0, merged.stderr
    assert "3 file(s) merged" in merged.stdout and "1 already there" in merged.stdout
    assert sorted(p.name for p in dest.iterdir()) == [last_night.name, "runner-n2-1.1.jsonl", "runner-n2-1.jsonl",
                                                      "runner-n2-2.jsonl"]
    store = h.read(dest)
    assert sorted((r.run_id, r.test_id) for r in store.records) == [
        ("n1", "tiny-a-s0"), ("n2", "tiny-a-s0"), ("n2", "tiny-b-s0"), ("n2", "tiny-c-s0")]
    # a longer version of a file (its process appended more) replaces the shorter one
    longer = shard1 / "runner-n2-1.jsonl"
    longer.write_text(longer.read_text() + history_record("n2", "tiny-d-s0", 0.05).to_json() + "\n")
    assert history_script("merge", dest, shard1).returncode == 0
    assert len(h.read(dest).records) == 5

    pruned = history_script("prune", dest, "--keep-runs", "1")
    assert pruned.returncode == 0 and "1 file(s) of runs older than the newest 1 removed" in pruned.stdout
    assert h.read(dest).runs() == ["n2"]
    missing = history_script("merge", dest, tmp_path / "nowhere")
    assert missing.returncode == 2 and "nowhere: no such history folder" in missing.stderr


def test_nightly_summary_merges_the_shards_history_and_writes_the_trends(tmp_path: Path) -> None:
    """The summary job's step on two shards' artifacts, with last night's history restored."""
    cache, shards, out = tmp_path / "qg-history", tmp_path / "shards", tmp_path / "github-output"
    h.append(cache, [history_record("n1", f"tiny-{c}-s0", 0.010, day=1) for c in ("a", "b")], run_of("n1", 1))
    for shard, (case, lpips) in enumerate((("a", 0.030), ("b", 0.011)), start=1):
        folder = shards / f"qg-nightly-shard-{shard}"
        record = {"id": f"tiny-{case}-s0", "verdict": "passed", "passed": True, "outcome": "passed",
                  "metrics": {"lpips": lpips}}
        (folder / "report").mkdir(parents=True)
        (folder / "report" / "results.json").write_text(json.dumps({"results": [record]}))
        h.append(folder / "history", [history_record("n2", f"tiny-{case}-s0", lpips)], run_of("n2"))
    proc = subprocess.run(["bash", "ci/nightly.sh", "summary", str(shards)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=script_env(QG_HISTORY_DIR=str(cache), QG_PYTHON=sys.executable,
                                                      QG_TRENDS_OUT=str(tmp_path / "trends"), GITHUB_OUTPUT=str(out),
                                                      GITHUB_RUN_ID="77", GITHUB_RUN_ATTEMPT="2"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert h.read(cache).runs() == ["n1", "n2"] and len(h.read(cache).records) == 4
    assert "2 file(s) merged" in proc.stdout
    moved = proc.stdout[proc.stdout.index("### Moved since last night"):]
    assert "**tiny**: n1 → n2" in moved
    rows = [line for line in moved.splitlines() if line.startswith("| tiny-")]
    assert rows[0].startswith("| tiny-a-s0 | 0.0100 | 0.0300 | ⚠️ +200.0% |")  # moved most: first, marked worse
    assert rows[1].startswith("| tiny-b-s0 | 0.0100 | 0.0110 | ⚠️ +10.0% |")
    page = (tmp_path / "trends" / "trends.html").read_text()
    assert page.count('class="sparkline"') == 8 and "moved most since n1 (oldest)" in page
    assert re.fullmatch(r"history-key=qg-history-\d{8}-77-2\n", out.read_text())


def test_nightly_script_stops_on_an_unknown_checkpoint(tmp_path: Path) -> None:
    proc = subprocess.run(["bash", "ci/nightly.sh", "run"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=script_env(QG_CHECKPOINT="no-such-checkpoint", QG_OUT=str(tmp_path)))
    assert proc.returncode == 2
    assert "no checkpoint 'no-such-checkpoint'" in proc.stdout and re.search(r"known: .*\btiny\b", proc.stdout)


@pytest.mark.parametrize("script", [["ci/nightly.sh", "run"], ["ci/rebaseline.sh"]])
def test_only_the_prefetch_may_download(tmp_path: Path, script: list[str]) -> None:
    """The workflows leave downloads to the prefetch (DiffSynth's default: download); every
    pytest process after it runs with DIFFSYNTH_SKIP_DOWNLOAD=True, so no test and no xdist
    worker contacts the model hub again."""
    for name in ("nightly-gpu.yml", "rebaseline.yml"):
        workflow = load_workflow(name)
        assert "DIFFSYNTH_SKIP_DOWNLOAD" not in workflow["env"]
        assert all("DIFFSYNTH_SKIP_DOWNLOAD" not in step.get("env", {}) for job in workflow["jobs"].values()
                   for step in job["steps"])
    log = tmp_path / "log"
    recorders = {}
    for name, then in (("python", f'exec "{sys.executable}" "$@"'), ("pytest", "exit 0")):
        recorders[name] = tmp_path / name
        recorders[name].write_text(f'#!/bin/sh\necho "{name} ${{DIFFSYNTH_SKIP_DOWNLOAD-unset}}" >> "{log}"\n{then}\n')
        recorders[name].chmod(0o755)
    env = script_env(QG_CHECKPOINT="tiny", QG_OUT=str(tmp_path / "out"), QG_WORKERS="1",
                     QG_PYTHON=str(recorders["python"]), PYTEST=str(recorders["pytest"]))
    env.pop("DIFFSYNTH_SKIP_DOWNLOAD", None)
    proc = subprocess.run(["bash", *script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    calls = log.read_text().split("\n")
    assert calls[0] == "python unset"  # the prefetch: downloads allowed
    assert [line for line in calls if line.startswith("pytest")] == ["pytest True"]


@pytest.fixture
def project_repo(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A git clone of a small project (this repository's configuration, visual test, goldens and
    ci/ scripts) with a bare 'origin'; yields (clone, origin)."""
    origin, work = tmp_path / "origin.git", tmp_path / "work"
    for name in ("pyproject.toml", "README.md", "tests/visual/test_visual_gate.py", "ci/common.sh", "ci/rebaseline.sh",
                 "ci/step_summary.py"):
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, work / name)
    # goldens made on "another machine": pixels a few levels off this machine's renders
    copy_perturbed(ROOT / "golden", work / "golden", environment=OTHER_MACHINE)
    for path in (work / "golden" / "tiny").glob("red-circle-blue-s0.*"):  # one golden missing: the update creates it
        path.unlink()

    def git(*args: str, cwd: Path = work) -> str:
        return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()

    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    git("init", "-q", "-b", "main")
    (work / ".gitignore").write_text("qg-out/\n__pycache__/\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "project")
    git("remote", "add", "origin", str(origin))
    git("push", "-q", "origin", "main")
    yield work, origin


@pytest.mark.slow
def test_rebaseline_script_proposes_goldens_on_a_branch(project_repo: tuple[Path, Path], tmp_path: Path) -> None:
    work, origin = project_repo
    main_before = subprocess.run(["git", "rev-parse", "main"], cwd=origin, capture_output=True, text=True).stdout
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gh_log = tmp_path / "gh.log"
    (bin_dir / "gh").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{gh_log}"\n')  # records `gh pr create`
    (bin_dir / "gh").chmod(0o755)
    env = script_env(QG_MARKERS="not gpu", QG_CHECKPOINT="tiny", QG_OPEN_PR="true", GITHUB_RUN_ID="42",
                     QG_PYTEST_ARGS=f"tests/visual -p no:cacheprovider -k {FLOAT8}-red-circle-blue-s0", QG_WORKERS="1",
                     PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", GIT_CONFIG_NOSYSTEM="1")
    proc = subprocess.run(["bash", "ci/rebaseline.sh"], cwd=work, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    created = [f"golden/tiny/red-circle-blue-s0{s}" for s in (".float8_e4m3fn.expected.yml", ".json", ".png")]
    assert sorted(p.relative_to(work / "qg-out" / "golden").as_posix()
                  for p in (work / "qg-out" / "golden").rglob("*") if p.is_file()) == created
    note = (work / "qg-out" / "rebaseline.md").read_text()
    assert "quant_guard: goldens 1 created, 0 updated, 0 unchanged" in note and "`golden/tiny/red-circle-blue-s0.png`" in note

    # main on the remote is untouched; the goldens are on the new branch; the PR targets main
    git = ["git", "-C", str(origin)]
    assert subprocess.run([*git, "rev-parse", "main"], capture_output=True, text=True).stdout == main_before
    branch = "rebaseline/tiny-42"
    files = subprocess.run([*git, "diff", "--name-only", "main", branch], capture_output=True, text=True).stdout
    assert files.split() == created
    assert gh_log.read_text().split("\n")[:6] == ["pr", "create", "--base", "main", "--head", branch]


@pytest.mark.slow
def test_rebaseline_script_proposes_nothing_when_goldens_are_within_drift_tolerance(
        project_repo: tuple[Path, Path], tmp_path: Path) -> None:
    """The goldens were made elsewhere (their pixels differ from this machine's renders by a few
    levels): the update keeps them, so nothing is committed, pushed or proposed."""
    work, origin = project_repo
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gh_log = tmp_path / "gh.log"
    (bin_dir / "gh").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{gh_log}"\n')
    (bin_dir / "gh").chmod(0o755)
    env = script_env(QG_MARKERS="not gpu", QG_CHECKPOINT="tiny", QG_OPEN_PR="true", QG_WORKERS="1",
                     QG_PYTEST_ARGS=f"tests/visual -p no:cacheprovider -k {FLOAT8}-red-circle-blue-s1",
                     PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(["bash", "ci/rebaseline.sh"], cwd=work, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "quant_guard: goldens 0 created, 0 updated, 1 unchanged (1 within drift tolerance)" in proc.stdout
    assert "goldens unchanged: nothing to propose" in proc.stdout
    assert subprocess.run(["git", "status", "--porcelain"], cwd=work, capture_output=True, text=True).stdout == ""
    branches = subprocess.run(["git", "-C", str(origin), "for-each-ref", "--format=%(refname:short)", "refs/heads"],
                              capture_output=True, text=True).stdout
    assert branches.split() == ["main"] and not gh_log.exists()


def test_rebaseline_script_without_gh_stops_before_rendering_or_pushing(project_repo: tuple[Path, Path]) -> None:
    work, origin = project_repo
    # PATH without any folder that holds a `gh`, whatever this machine has installed
    path = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep) if d and not (Path(d) / "gh").exists())
    env = script_env(QG_MARKERS="not gpu", QG_CHECKPOINT="tiny", QG_OPEN_PR="true", QG_WORKERS="1",
                     QG_PYTEST_ARGS=f"tests/visual -p no:cacheprovider -k {FLOAT8}-red-circle-blue-s0", PATH=path)
    proc = subprocess.run(["bash", "ci/rebaseline.sh"], cwd=work, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 2
    assert "QG_OPEN_PR=true opens the pull request with the GitHub CLI, but `gh` is not on PATH" in proc.stderr
    assert "Nothing was rendered, committed or pushed." in proc.stderr
    assert not (work / "qg-out" / "pytest.log").exists()  # stopped before the update ran
    assert subprocess.run(["git", "status", "--porcelain"], cwd=work, capture_output=True, text=True).stdout == ""
    branches = subprocess.run(["git", "-C", str(origin), "for-each-ref", "--format=%(refname:short)", "refs/heads"],
                              capture_output=True, text=True).stdout
    assert branches.split() == ["main"]


# ---- ci/step_summary.py on a real run ----------------------------------------------------------



@pytest.fixture(scope="module")
def step_summary() -> ModuleType:
    return load_step_summary()


@pytest.fixture
def real_results(pytester: pytest.Pytester, qg_project: Callable[..., Path]) -> Path:
    """The report folder of a real tiny run: one passing case with limits, one failing (PSNR)."""
    qg_project(checkpoint_extra='limits = { peak_vram = "4 GiB", step_time = "10 s" }', extra_case=STRICT_CASE)
    update = pytester.runpytest("--update-golden")  # writes both goldens; the strict candidate fails already
    update.stdout.fnmatch_lines(["quant_guard: goldens 2 created, 0 updated, 0 unchanged; "
                                 "expected metrics not recorded for 1 failing candidate"])
    pytester.runpytest("--qg-report-dir", "report").assert_outcomes(passed=1, failed=1)
    return pytester.path / "report"


def test_step_summary_of_a_real_run(real_results: Path, step_summary: ModuleType, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    proc = subprocess.run([sys.executable, "-I", "-S", str(ROOT / "ci" / "step_summary.py"), str(real_results)],
                          capture_output=True, text=True)  # -S: standard library only
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "❌ **2 visual tests: 1 passed, 1 failed** (1 image-failed, 1 passed)" in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert table[0] == "| case | verdict | LPIPS | SSIM | PSNR | peak memory | step time | duration |"
    widths = {len(re.split(r"(?<!\\)\|", line)) for line in table}
    assert widths == {10}  # 8 cells in every row

    passing = next(line for line in table if "`tiny-red-circle-s0`" in line)
    assert "✅ passed" in passing and "❌" not in passing
    assert re.search(r"\| 0\.\d{4} \| 0\.\d{4} \| \d+\.\d\d dB \|", passing)
    assert re.search(r"\| [\d.]+ \w?i?B / 4\.00 GiB \(RSS\) \|", passing)  # measured / limit
    assert re.search(r"\| [\d.]+ m?s / 10\.00 s \(median\) \|", passing)

    failing = next(line for line in table if "`tiny-strict-s0`" in line)
    assert "❌ image-failed" in failing and re.search(r"❌ \*\*\d+\.\d\d dB\*\* < min 150\.00 dB", failing)
    assert "### Failures" in text
    assert re.search(r"<code>tiny-strict-s0</code>: PSNR \d+\.\d\d dB &lt; min 150\.00 dB \(threshold\)</summary>", text)

    # the same numbers as results.json
    record = next(r for r in json.loads((real_results / "results.json").read_text())["results"]
                  if r["id"] == "tiny-red-circle-s0")
    assert f"{record['metrics']['lpips']:.4f}" in passing and f"{record['metrics']['psnr']:.2f} dB" in passing

    # shards: several report folders merge into one table
    document = json.loads((real_results / "results.json").read_text())
    for index, record in enumerate(document["results"]):  # one record per "shard"
        shard = tmp_path / f"shard-{index}"
        shard.mkdir()
        (shard / "results.json").write_text(json.dumps({**document, "results": [record]}))
    capsys.readouterr()
    assert step_summary.main([str(tmp_path / "shard-1"), str(tmp_path / "shard-0"), "--title", "all"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("## all\n") and "2 visual tests: 1 passed, 1 failed" in text
    assert text.index("`tiny-red-circle-s0`") < text.index("`tiny-strict-s0`")  # merged shards sort by id

    assert step_summary.main([str(tmp_path / "missing"), "--require-results"]) == 1
    assert "no results.json in" in capsys.readouterr().out
    assert step_summary.main([str(tmp_path / "missing")]) == 0


def test_step_summary_formats(step_summary: ModuleType) -> None:
    assert step_summary.fmt_bytes(10 * 2**30) == "10.00 GiB" and step_summary.fmt_bytes(512) == "512 B"
    assert step_summary.fmt_seconds(9.5) == "9.50 s" and step_summary.fmt_seconds(0.0123) == "12.3 ms"
    assert step_summary.number("inf") == float("inf") and step_summary.number(True) is None
    assert step_summary.step_statistic([5.0, 1.0, 2.0, 3.0], "median", 1) == 2.0  # warm-up step dropped
    assert step_summary.step_statistic([5.0], "max", 1) == 5.0  # too short to drop one
    assert step_summary.cell("a|b\nc") == "a\\|b c"


def test_step_summary_of_a_test_that_could_not_render(step_summary: ModuleType) -> None:
    """A record without metrics or render (a checkpoint that failed to load) still gets its row."""
    record = {"id": "big-case-s0", "verdict": "error", "outcome": "failed", "passed": False, "metrics": None,
              "checks": [], "budget_checks": [], "candidate_render": None, "duration_s": 1.5,
              "reason": "checkpoint 'big' component dit: file models/dit.safetensors does not exist\nmore"}
    text = step_summary.markdown([record], [], "t")
    assert "| `big-case-s0` | ❌ error | – | – | – | – | – | 1.50 s |" in text
    assert "<code>big-case-s0</code>: checkpoint 'big' component dit: file models/dit.safetensors does not exist" in text
