#!/usr/bin/env bash
# Runs tests/apps/streamlit_app.py on 127.0.0.1:PORT (optionally under BASE_PATH, e.g. /st).
# Usage: tests/apps/streamlit.sh PORT [BASE_PATH]
# Streamlit's own XSRF protection and CORS/WebSocket origin check stay ON (the defaults): both
# work behind a same-origin proxy that forwards the client's Host header (authgate's default).
# exec's streamlit: killing this PID stops it.
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 PORT [BASE_PATH]" >&2
  exit 2
fi
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
py="${PYTHON:-$root/target/webapps-venv/bin/python}"
# A private config/credentials dir: no ~/.streamlit prompts or shared state between tests.
export HOME="${STREAMLIT_HOME:-$(mktemp -d "${TMPDIR:-/tmp}/authgate-streamlit.XXXXXX")}"
export PYTHONDONTWRITEBYTECODE=1
args=(
  --server.port "$1" --server.address 127.0.0.1 --server.headless true
  --browser.gatherUsageStats false --server.fileWatcherType none
  --server.runOnSave false --global.developmentMode false
)
if [ $# -ge 2 ] && [ -n "$2" ]; then
  args+=(--server.baseUrlPath "$2")
fi
exec "$py" -m streamlit run "$here/streamlit_app.py" "${args[@]}"
