#!/usr/bin/env bash
# Install Debian's Chromium and ChromeDriver for the headless browser tests
# (tests/book/test_html.py). Idempotent: does nothing when both are present.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
DRIVER=/usr/bin/chromedriver

if [ -x "$CHROMIUM" ] && [ -x "$DRIVER" ]; then
    echo "chromium and chromedriver already installed"
else
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            SUDO="sudo"
        else
            echo "error: not root and sudo not found; cannot install chromium" >&2
            exit 1
        fi
    fi
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends chromium chromium-driver
fi

"$CHROMIUM" --version
"$DRIVER" --version
