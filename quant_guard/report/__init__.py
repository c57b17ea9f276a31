"""Reports of a quant_guard run: results.json, the HTML report, pytest-html extras."""
