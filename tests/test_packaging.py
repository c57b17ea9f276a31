"""The wheel: built from the repository, installed into a fresh virtualenv, it carries the report
templates and all package data and runs a tiny visual project; and the plugin modules that pytest
imports on every run (``pytest --version`` too) import nothing heavy.

The fresh virtualenv sees the already installed dependencies (torch & co.) through a ``.pth``
line instead of downloading them again; quant_guard itself comes from the wheel only: the
editable install's finder is never activated there, and every run starts outside the source tree.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from helpers import project_toml

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "diffsynth", "lpips", "PIL", "skimage", "numpy", "jinja2")


def imported_modules(*args: str, cwd: Path) -> set[str]:
    """Top-level names of every module a Python command imports (``-X importtime``)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)", proc.stderr, re.M)
    assert names, "no -X importtime output"
    return {name.split(".")[0] for name in names}


def test_the_plugin_modules_import_nothing_heavy(tmp_path: Path) -> None:
    modules = imported_modules("-c", "import quant_guard.plugin, quant_guard.run.report_hooks", cwd=tmp_path)
    assert "quant_guard" in modules
    assert sorted(modules & set(HEAVY)) == []


def test_pytest_version_with_the_plugin_installed_imports_nothing_heavy(tmp_path: Path) -> None:
    modules = imported_modules("-m", "pytest", "--version", "--version", "-p", "no:cacheprovider", cwd=tmp_path)
    assert "quant_guard" in modules  # its entry points were loaded
    assert sorted(modules & {"torch", "diffsynth", "lpips", "PIL", "skimage"}) == []


# ---- the wheel -------------------------------------------------------------------------------

def source_files() -> list[str]:
    """The project's files as git sees them (tracked and new, not ignored); all files otherwise."""
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
        return [name for name in out.split("\0") if name and (ROOT / name).is_file()]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "__pycache__", "build", "dist"}
        return [p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*")
                if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A wheel built from a copy of the source tree (a build in place would write build/ and
    *.egg-info into the working tree); returns it and the package files it must contain."""
    src, dist = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    package_files = []
    for name in source_files():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
        if name.startswith("quant_guard/") and not name.endswith(".pyc"):
            package_files.append(name)
    # README's command, without build isolation: the installed setuptools builds it offline
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src),
                    "-w", str(dist)], check=True, capture_output=True, text=True, timeout=300)
    (built,) = dist.glob("quant_guard-*.whl")
    return built, package_files


def test_the_wheel_carries_every_package_file(wheel: tuple[Path, list[str]]) -> None:
    built, package_files = wheel
    with zipfile.ZipFile(built) as archive:
        names = set(archive.namelist())
        entry_points = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert sorted(set(package_files) - names) == []
    assert any(n.startswith("quant_guard/report/templates/") and n.endswith(".j2") for n in names)
    assert not any("__pycache__" in n or n.startswith(("tests/", "golden/")) for n in names)
    # test-only code (the report's browser driver) stays in tests/, out of what users install
    assert not any(n.endswith(("/browser.py", "/report_browser.py")) for n in names)
    playwright = [line for line in metadata.splitlines() if line.startswith("Requires-Dist: playwright")]
    assert playwright and all('extra == "test"' in line for line in playwright)  # a test dependency only
    points = configparser.ConfigParser()
    points.read_string(entry_points)
    assert dict(points["pytest11"]) == {"quant_guard": "quant_guard.plugin",
                                        "quant_guard_report": "quant_guard.run.report_hooks"}
    assert points["console_scripts"]["quant-guard"] == "quant_guard.cli:main"


PROJECT_TESTS = '''
import sys
from pathlib import Path


def test_visual(qg_case, qg_gate):
    qg_gate.check(qg_case)


def test_the_plugin_comes_from_the_wheel():
    import quant_guard.plugin
    import quant_guard.run.report_hooks

    for module in (quant_guard.plugin, quant_guard.run.report_hooks):
        assert Path(module.__file__).is_relative_to(sys.prefix), module.__file__
'''


def make_venv(where: Path) -> Path:
    """A virtualenv of the base interpreter that sees this environment's packages (one .pth line
    per site-packages folder: the .pth files there, such as the editable install's, stay inactive)."""
    base = Path(getattr(sys, "_base_executable", sys.executable))
    system_site = sys.prefix != sys.base_prefix and "include-system-site-packages = true" in (
        Path(sys.prefix) / "pyvenv.cfg").read_text()
    subprocess.run([str(base), "-m", "venv", "--without-pip", *(["--system-site-packages"] if system_site else []),
                    str(where)], check=True, timeout=120)
    python = where / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (Path(site) / "_quant_guard_test_deps.pth").write_text("".join(f"{path}\n" for path in ours))
    return python


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_venv_and_runs_the_tiny_suite(wheel: tuple[Path, list[str]],
                                                                       tmp_path: Path) -> None:
    built, _ = wheel
    python = make_venv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(OMP_NUM_THREADS="1", PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1")

    def run(*args: str, cwd: Path = tmp_path) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{args}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        return proc

    # --no-index: the wheel's requirements must all be met by what is installed already
    run(sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index", "-q", str(built))
    where = run(str(python), "-c", "import quant_guard; print(quant_guard.__file__)").stdout.strip()
    assert Path(where).is_relative_to(tmp_path / "venv"), where
    templates = Path(where).parent / "report" / "templates"
    assert sorted(p.name for p in templates.iterdir()) == sorted(
        p.name for p in (ROOT / "quant_guard" / "report" / "templates").iterdir())
    run(str(tmp_path / "venv" / "bin" / "quant-guard"), "--help")

    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(project_toml(seeds="[0, 1]"))
    (project / "test_visual.py").write_text(PROJECT_TESTS)
    pytest_cmd = (str(python), "-m", "pytest", "-p", "no:cacheprovider", "-q")
    update = run(*pytest_cmd, "--update-golden", cwd=project)
    assert "quant_guard: goldens 2 created, 0 updated, 0 unchanged" in update.stdout
    check = run(*pytest_cmd, "--qg-report=all", cwd=project)
    assert re.search(r"\b3 passed\b", check.stdout), check.stdout[-2000:]
    assert (project / "golden" / "tiny" / "red-circle-s0.png").is_file()
    assert "<html" in (project / "qg-report" / "index.html").read_text()  # rendered from the wheel's templates
