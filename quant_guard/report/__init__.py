"""Reports of a quant_guard run.

- ``records``: results.json, one record per visual test (merged over xdist workers).
- ``html`` + ``view`` + ``templates/``: index.html, rendered from results.json.
- ``extras``: pytest-html extras of failing tests.
- ``trends`` + ``sparkline``: the metrics history's trends (inline SVG), in index.html and trends.html.
- ``scheme_table`` (ranking, standard library only) + ``scheme_plot`` (inline SVG) +
  ``schemes_view``: the scheme comparison per checkpoint (report, terminal, CI step summary).
- ``plugin``: the pytest hooks (own pytest11 entry point).

``python -m quant_guard.report DIR`` re-renders DIR/index.html. The project's tests open it in
headless Chromium (``tests/report_browser.py``).

May import: config, store, judge (the report wing is built from plain records, never from the
run's session).
"""
