#!/usr/bin/env bash
# System packages the test suite needs, installed by `make test` itself (no step only CI does):
# Debian's Chromium, which the browser tests of `avseg app` drive through Playwright (Playwright's
# own browser download is never used: nothing is downloaded at run time).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "make test: /usr/bin/chromium is missing and this is not root; run 'sudo apt-get install -y --no-install-recommends chromium' first" >&2
    exit 1
fi
echo "make test: installing Debian's chromium for the browser tests (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
test -x /usr/bin/chromium || { echo "make test: apt-get did not install /usr/bin/chromium" >&2; exit 1; }
