#!/usr/bin/env bash
# Install the OCR engine of the text legibility check (quant_guard.judge.text; README, "Text
# legibility"): Tesseract and its English model from the system's packages, and the DejaVu fonts
# the text tests draw their signs with (tests/judge/test_text.py). The Python binding (pytesseract)
# comes with the project's `text` extra (ci/install.sh).
# Idempotent: installs only what is missing. Debian/Ubuntu (apt); root or sudo.
set -euo pipefail

packages=()
for package in tesseract-ocr tesseract-ocr-eng fonts-dejavu-core; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || packages+=("$package")
done

if [[ ${#packages[@]} -gt 0 ]]; then
    SUDO=""
    if [[ "$(id -u)" != "0" ]]; then
        command -v sudo >/dev/null 2>&1 || { echo "install_ocr: need root or sudo for apt-get" >&2; exit 1; }
        SUDO="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends "${packages[@]}"
fi
echo "install_ocr: $(tesseract --version 2>/dev/null | head -n 1 || echo 'tesseract version unknown')"
