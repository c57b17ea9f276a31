"""``python -m quant_guard.report DIR [--history HIST]``: re-render DIR/index.html from
DIR/results.json (with the trends of the metrics history HIST)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quant_guard.report", description=__doc__)
    parser.add_argument("report_dir", type=Path, help="a quant_guard report directory (with results.json)")
    parser.add_argument("--history", type=Path, default=None, metavar="HIST",
                        help="a metrics history folder: show each case's trend (history_report defaults)")
    args = parser.parse_args(argv)

    from quant_guard.report.html import write_report

    trends = None
    if args.history is not None:
        from quant_guard.store.history import read
        from quant_guard.report.records import read_results
        from quant_guard.report.trends import build_trends

        ids = [str(r.get("id")) for r in read_results(args.report_dir).get("results", [])]
        trends = build_trends(read(args.history), test_ids=ids)
    print(f"report: {write_report(args.report_dir, trends)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
