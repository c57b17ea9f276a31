#!/usr/bin/env python3
"""The nightly's metrics history between runs (.github/workflows/nightly-gpu.yml, ci/nightly.sh).

    python3 ci/history.py snapshot DIR > BEFORE        the history files present before a run
    python3 ci/history.py collect DIR BEFORE OUT       copy the files the run added (not in BEFORE) to OUT
    python3 ci/history.py merge DEST SRC [SRC ...]     copy the shards' files into DEST (see merge())
    python3 ci/history.py prune DIR --keep-runs N      delete the files of all but the newest N runs

The history is a folder of JSON Lines files, one per writing process (quant_guard.store.history), so a
merge is a copy; this script only decides which files to copy and refuses to lose any line.
Standard library plus quant_guard.store.history from this checkout (no install needed, like
ci/step_summary.py). Exit status 0; 2 on a usage error or a source folder that does not exist.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # quant_guard from this checkout

from quant_guard.store.history import SUFFIX, History, read, read_file  # noqa: E402


def history_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"*{SUFFIX}")) if directory.is_dir() else []


def snapshot(directory: Path) -> str:
    return "".join(f"{p.name}\n" for p in history_files(directory))


def collect(directory: Path, before: Path, out: Path) -> list[Path]:
    """Copy the files of ``directory`` that ``before`` (a snapshot) does not list to ``out``: the
    records this run appended (each process of a run writes a file of its own)."""
    known = set(before.read_text(encoding="utf-8").split()) if before.is_file() else set()
    copied = []
    for path in history_files(directory):
        if path.name not in known:
            out.mkdir(parents=True, exist_ok=True)
            copied.append(Path(shutil.copy2(path, out / path.name)))
    return copied


def merge(dest: Path, sources: list[Path]) -> tuple[int, int, int]:
    """Copy every history file of ``sources`` into ``dest``: a new name is copied; the same name
    with the same bytes, or with bytes that ``dest`` already extends, is skipped; a longer version
    of a file ``dest`` has (the same process appended more) replaces it; any other clash is kept
    beside it as ``<name>.<n>.jsonl``. Returns (copied, skipped, records read from the sources)."""
    dest.mkdir(parents=True, exist_ok=True)
    copied = skipped = records = 0
    for source in sources:
        if not source.is_dir():
            raise FileNotFoundError(f"{source}: no such history folder")
        store = read(source)
        records += len(store.records)
        for problem in store.skipped:
            print(f"::warning title=quant_guard history::{source}: skipped {problem}")
        for path in history_files(source):
            data, target = path.read_bytes(), dest / path.name
            if target.exists():
                have = target.read_bytes()
                if have.startswith(data):
                    skipped += 1
                    continue
                if not data.startswith(have):
                    n = 1
                    while (dest / f"{path.stem}.{n}{SUFFIX}").exists():
                        n += 1
                    target = dest / f"{path.stem}.{n}{SUFFIX}"
            target.write_bytes(data)
            copied += 1
    return copied, skipped, records


def prune(directory: Path, keep_runs: int) -> list[Path]:
    """Delete the files whose every record belongs to a run older than the newest ``keep_runs``
    runs (a file with no readable record is kept: it is nobody's to delete)."""
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such history directory")
    of_file = {path: read_file(path)[0] for path in history_files(directory)}  # each file read once
    runs = History(tuple(r for records in of_file.values() for r in records)).runs()
    keep = set(runs[-keep_runs:]) if keep_runs > 0 else set()
    removed = []
    for path, records in of_file.items():
        runs_of_file = {r.run_id for r in records}
        if runs_of_file and not runs_of_file & keep:
            path.unlink()
            removed.append(path)
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("snapshot", help="list the history files present now")
    p.add_argument("dir", type=Path)
    p = sub.add_parser("collect", help="copy the files a run added since a snapshot")
    p.add_argument("dir", type=Path)
    p.add_argument("before", type=Path)
    p.add_argument("out", type=Path)
    p = sub.add_parser("merge", help="copy the shards' history files into one folder")
    p.add_argument("dest", type=Path)
    p.add_argument("sources", type=Path, nargs="+")
    p = sub.add_parser("prune", help="delete the files of all but the newest runs")
    p.add_argument("dir", type=Path)
    p.add_argument("--keep-runs", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "snapshot":
            sys.stdout.write(snapshot(args.dir))
        elif args.command == "collect":
            copied = collect(args.dir, args.before, args.out)
            print(f"history: {len(copied)} new file(s) of this run copied to {args.out}")
        elif args.command == "merge":
            copied, skipped, records = merge(args.dest, args.sources)
            print(f"history: {copied} file(s) merged into {args.dest} ({skipped} already there; "
                  f"{records} record(s) in the sources)")
        else:
            removed = prune(args.dir, args.keep_runs)
            print(f"history: {len(removed)} file(s) of runs older than the newest {args.keep_runs} removed")
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
