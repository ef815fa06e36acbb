#!/usr/bin/env bash
# ensure-package.sh PACKAGE PATTERN WHAT: the tests need a system program (PostgreSQL's initdb for a
# throwaway server, chromium for the report tests). If nothing matches PATTERN (a path glob, or a
# command name on PATH), install Debian's PACKAGE when we can; otherwise warn that WHAT will be
# skipped (they fail under CI=true).
set -euo pipefail
package=$1 pattern=$2 what=$3
if compgen -G "$pattern" >/dev/null || command -v "$pattern" >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "$pattern not found: installing Debian's $package package for $what" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
  exit 0
fi
echo "warning: no $pattern and no way to install it; $what will be skipped (they fail under CI=true)" >&2
