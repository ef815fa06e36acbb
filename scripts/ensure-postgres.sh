#!/usr/bin/env bash
# The PostgreSQL tests start a throwaway server from the machine's PostgreSQL installation.
# Make sure one exists: install Debian's server package when it is missing and we can.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "PostgreSQL server not found: installing Debian's postgresql package for the tests" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  exit 0
fi
echo "warning: no PostgreSQL server binaries and no way to install them; PostgreSQL tests will be skipped (they fail under CI=true)" >&2
