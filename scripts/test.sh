#!/usr/bin/env bash
# The whole test suite. Installs what a fresh machine lacks (redis-server: the tests start
# their own instances on free ports), then runs every unit and integration test.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server not found; installing it from Debian's packages" >&2
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --locked --all-targets "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# One closing line over every test binary (the last binary alone may have no tests).
awk '/^test result:/ {p += $4; f += $6} END {print "tests: " p " passed, " f " failed"}' "$log"
exit "$rc"
