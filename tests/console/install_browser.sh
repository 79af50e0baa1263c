#!/usr/bin/env bash
# Installs Debian's Chromium for tests/test_console_browser.py, which drives it through
# Playwright: Playwright's own browser download needs a network the tests do not have,
# so the test launches the system browser at /usr/bin/chromium instead.
# Idempotent: does nothing when /usr/bin/chromium is there (the tests run as root on Debian).
set -euo pipefail

if [[ -x /usr/bin/chromium ]]; then
    exit 0
fi

echo "install_browser.sh: installing chromium from Debian"
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y chromium

if [[ ! -x /usr/bin/chromium ]]; then
    echo "install_browser.sh: /usr/bin/chromium is still missing after the install" >&2
    exit 1
fi
