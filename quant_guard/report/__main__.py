"""``python -m quant_guard.report DIR``: re-render DIR/index.html from DIR/results.json."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quant_guard.report", description=__doc__)
    parser.add_argument("report_dir", type=Path, help="a quant_guard report directory (with results.json)")
    args = parser.parse_args(argv)

    from quant_guard.report.html import write_report

    print(f"report: {write_report(args.report_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
