#!/usr/bin/env bash
# Soak (not in CI): two gateways sharing a Sentinel-managed Redis for SOAK_SECONDS (default
# 600) under load, the primary failing over twice, configs rewritten every 30 s. Prints
# requests served, revoked tokens admitted (must be 0), RSS and open fds at start and end.
#   bench/soak.sh                 # ten minutes
#   SOAK_SECONDS=90 bench/soak.sh # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-sentinel >/dev/null || need+=(redis-sentinel)
command -v redis-cli >/dev/null || need+=(redis-tools)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --locked --bin authgate
exec python3 bench/soak.py "$@"
