"""The package's layout: wings (sub-packages) that import one way only, and no import circle.

Every import of a quant_guard module counts: at module level, under ``if TYPE_CHECKING:`` and
inside functions (an import that runs late is still a dependency a reader has to follow). Each
wing's ``__init__`` docstring says which wings it may import (``May import: ...``); this test
holds the code to those lines, and checks that the lines themselves form one order.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "quant_guard"
ENTRY_POINTS = {"quant_guard.plugin", "quant_guard.cli"}  # thin top-level modules: may import any wing
WING_ORDER = ("config", "store", "judge", "model", "report", "run", "tools")  # bottom first (README, "How it works")


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(tree: ast.Module, modules: set[str]) -> set[str]:
    """Every quant_guard module that ``tree`` imports, wherever the import statement stands.
    ``from quant_guard.x import y`` counts ``quant_guard.x`` and, when y is a module, ``quant_guard.x.y``."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found & modules


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    paths = {module_name(p, package): p for p in package.rglob("*.py")}
    names = set(paths)
    return {name: imports_of(ast.parse(path.read_text(encoding="utf-8")), names) - {name}
            for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def wing_rules(package: Path = PACKAGE) -> dict[str, set[str]]:
    """wing -> the wings it may import, read from the ``May import:`` line of its ``__init__`` docstring."""
    rules = {}
    for init in sorted(package.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        match = re.search(r"May import:\s*(.+?)(?:\(|\.|\n\n|$)", doc, re.S)
        assert match, f"{init}: the docstring says which wings it may import ('May import: ...')"
        text = " ".join(match.group(1).split())
        allowed = set() if text.startswith("nothing") else set(re.findall(r"[a-z]+", text))
        if "every" in allowed:
            allowed = {"*"}
        rules[init.parent.name] = allowed
    return rules


def upward_imports(package: Path = PACKAGE) -> list[str]:
    """Each import of a module from a wing its own wing may not import, as ``importer -> imported``."""
    rules = wing_rules(package)
    wings = set(rules)

    def wing(module: str) -> str | None:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 and parts[1] in wings else None

    wrong = []
    for module, deps in sorted(import_graph(package).items()):
        own = wing(module)
        if own is None:  # the package root, plugin.py, cli.py
            continue
        for dep in sorted(deps):
            target = wing(dep)
            if dep == "quant_guard" or target == own or "*" in rules[own] and dep not in ENTRY_POINTS:
                continue
            if target is None or target not in rules[own]:
                wrong.append(f"{module} -> {dep}")
    return wrong


def test_the_finder_sees_every_kind_of_import() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from quant_guard.run.cases import X\n"
                     "def f():\n    import quant_guard.run.gate\n    from quant_guard.judge import metrics\n")
    modules = {"quant_guard.run.cases", "quant_guard.run.gate", "quant_guard.judge", "quant_guard.judge.metrics"}
    assert imports_of(tree, modules) == modules


def test_the_wings_form_one_order() -> None:
    """Each wing may import only wings before it in one order (bottom first), so no two wings
    can import each other, however their modules change."""
    rules = wing_rules()
    assert set(rules) == set(WING_ORDER)
    for i, wing in enumerate(WING_ORDER):
        allowed = set(WING_ORDER[:i]) if "*" in rules[wing] else rules[wing]
        assert allowed <= set(WING_ORDER[:i]), f"{wing} may import {sorted(allowed - set(WING_ORDER[:i]))}, which come after it"


def test_every_import_goes_down_the_wings() -> None:
    assert upward_imports() == []


def test_the_package_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    assert {"quant_guard.run.cases", "quant_guard.judge.budgets", "quant_guard.config.project"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_a_planted_upward_import_and_circle_are_found(tmp_path: Path) -> None:
    """The checks read the real package: plant an import of the gate inside a function of the
    judge's metrics (upward, and a circle since the gate imports the metrics), and one under
    TYPE_CHECKING in the store (upward), in a copy of the package."""
    copy = tmp_path / "quant_guard"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "weights", "templates"))
    metrics = copy / "judge" / "metrics.py"
    metrics.write_text(metrics.read_text(encoding="utf-8")
                       + "\n\ndef _planted() -> None:\n    from quant_guard.run import gate  # noqa: F401\n",
                       encoding="utf-8")
    golden = copy / "store" / "golden.py"
    golden.write_text(golden.read_text(encoding="utf-8").replace(
        "if TYPE_CHECKING:\n", "if TYPE_CHECKING:\n    from quant_guard.model.render import Render  # noqa: F401\n", 1),
        encoding="utf-8")
    assert upward_imports(copy) == ["quant_guard.judge.metrics -> quant_guard.run",
                                    "quant_guard.judge.metrics -> quant_guard.run.gate",
                                    "quant_guard.store.golden -> quant_guard.model.render"]
    cycle = find_cycle(import_graph(copy))
    assert cycle is not None and "quant_guard.judge.metrics" in cycle and "quant_guard.run.gate" in cycle
