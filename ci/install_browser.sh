#!/usr/bin/env bash
# Install headless Chromium for the report's browser test (tests/report/test_report_browser.py), which
# drives it with Playwright (the test extra) through executable_path: Playwright's own browser
# download (`playwright install`) is never used. The test finds the browser the way this script
# does: $QG_CHROMIUM, else the first of the names below on PATH (tests/report_browser.py).
# Idempotent: installs only what is missing; does nothing when a browser (chromium on PATH, or
# $QG_CHROMIUM) and the fonts are already there. Debian/Ubuntu (apt); root or sudo.
set -euo pipefail

packages=()
browser="${QG_CHROMIUM:-}"
if [[ -z "$browser" ]]; then
    for name in chromium chromium-browser google-chrome google-chrome-stable; do
        if command -v "$name" >/dev/null 2>&1; then browser="$(command -v "$name")"; break; fi
    done
fi
[[ -n "$browser" && -x "$browser" ]] || packages+=(chromium)
# fonts-dejavu-core: a default font; fonts-wqy-microhei: CJK glyphs (prompts may be Chinese)
for font in fonts-dejavu-core fonts-wqy-microhei; do
    dpkg-query -W -f='${Status}' "$font" 2>/dev/null | grep -q "install ok installed" || packages+=("$font")
done

if [[ ${#packages[@]} -gt 0 ]]; then
    SUDO=""
    if [[ "$(id -u)" != "0" ]]; then
        command -v sudo >/dev/null 2>&1 || { echo "install_browser: need root or sudo for apt-get" >&2; exit 1; }
        SUDO="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends "${packages[@]}"
    [[ -n "$browser" ]] || browser="$(command -v chromium)"
fi
echo "install_browser: $browser ($("$browser" --version 2>/dev/null || echo 'version unknown'))"
