#!/usr/bin/env bash
# Install headless Chromium for the report's browser test (tests/test_report_browser.py).
# Idempotent: does nothing when a chromium binary is already on PATH (or QG_CHROMIUM points to one).
# Debian/Ubuntu (apt); run as root or with sudo available.
set -euo pipefail

if [[ -n "${QG_CHROMIUM:-}" && -x "${QG_CHROMIUM}" ]]; then
    echo "install_browser: using QG_CHROMIUM=${QG_CHROMIUM}"
    exit 0
fi
for name in chromium chromium-browser google-chrome google-chrome-stable; do
    if command -v "$name" >/dev/null 2>&1; then
        echo "install_browser: $(command -v "$name") is already installed ($("$name" --version 2>/dev/null || echo 'version unknown'))"
        exit 0
    fi
done

SUDO=""
if [[ "$(id -u)" != "0" ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "install_browser: need root or sudo for apt-get" >&2; exit 1; }
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# fonts-dejavu-core: a default font, so text in screenshots renders
$SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-dejavu-core
chromium --version
