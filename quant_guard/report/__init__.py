"""Reports of a quant_guard run.

- ``records``: results.json, one record per visual test (merged over xdist workers).
- ``html`` + ``view`` + ``templates/``: index.html, rendered from results.json.
- ``regions``: the worst regions of the spatial LPIPS map, heatmaps and zoomed crops.
- ``extras``: pytest-html extras of failing tests.
- ``browser``: headless Chromium over the DevTools pipe, to check a report as a person sees it.
- ``plugin``: the pytest hooks (own pytest11 entry point).

``python -m quant_guard.report DIR`` re-renders DIR/index.html; ``--check`` and
``--screenshot`` open it in Chromium.
"""
