#!/usr/bin/env bash
# A/B of proxied p99 during a login storm for two authgate binaries (ARGS: BIN_A BIN_B).
# Expects an upstream on 127.0.0.1:18080 and a config gw.toml (HS256, memory, workers = 1,
# a required catch-all route, the demo user) in the current directory; see docs/benchmarks.md.
set -u
lua=/tmp/prof/login.lua
printf 'wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n' "'{\"username\":\"demo\",\"password\":\"demo-password\"}'" > $lua
run() {
  RUST_LOG=warn $1 serve --config gw.toml > /dev/null 2>&1 &
  local pid=$!; sleep 0.8
  tok=$(curl -s localhost:18443/auth/login -H 'content-type: application/json' -d '{"username":"demo","password":"demo-password"}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["access_token"])')
  q=$(wrk -t2 -c64 -d6s --latency -H "Authorization: Bearer $tok" http://127.0.0.1:18443/x | grep -E "^ +99%" | awk '{print $2}')
  wrk -t1 -c8 -d8s -s $lua http://127.0.0.1:18443/auth/login > /tmp/prof/storm.out &
  sleep 1
  l=$(wrk -t2 -c64 -d6s --latency -H "Authorization: Bearer $tok" http://127.0.0.1:18443/x | grep -E "^ +99%|Requests/sec" | awk '{print $2}' | tr '\n' ' ')
  wait %2 2>/dev/null; sleep 1.5
  logins=$(grep Requests/sec /tmp/prof/storm.out | awk '{print $2}')
  echo "$(basename $1): p99 quiet=$q  storm: p99,rps=$l  logins/s during storm=$logins"
  kill $pid; wait $pid 2>/dev/null
}
for r in 1 2; do run "$1"; run "$2"; done
