#!/bin/sh
# System packages for the test suite: headless Chromium and its driver for tests/serve/test_demo_page.py.
# Installs them with apt-get only when /usr/bin/chromium (or /usr/bin/chromedriver) is missing, we are root
# and apt-get exists; otherwise prints a note and succeeds (the browser test then skips).  Run by `make test`.
set -u

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
if [ "$(id -u 2>/dev/null)" != "0" ]; then
    echo "note: /usr/bin/chromium or chromedriver is missing and we are not root; the browser test will skip" \
         "(sudo apt-get install chromium chromium-driver)" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "note: /usr/bin/chromium or chromedriver is missing and apt-get is not available; the browser test will skip" >&2
    exit 0
fi
echo "installing chromium and chromium-driver with apt-get (for the browser test)" >&2
if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; then
    exit 0
fi
echo "note: installing chromium chromium-driver failed; the browser test will skip" >&2
exit 0
