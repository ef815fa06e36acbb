#!/usr/bin/env bash
# The report tests open the generated HTML in a real headless browser: Debian's chromium.
# Make sure it exists: install the package when it is missing and we can.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "chromium not found: installing Debian's chromium package for the report tests" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  exit 0
fi
echo "warning: no chromium and no way to install it; the browser tests will be skipped (they fail under CI=true)" >&2
