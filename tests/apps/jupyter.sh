#!/usr/bin/env bash
# Runs JupyterLab on 127.0.0.1:PORT with its own authentication off (the gateway does it),
# serving notebooks from ROOT_DIR, optionally under BASE_URL (e.g. /lab-mount/).
# Usage: tests/apps/jupyter.sh PORT ROOT_DIR [BASE_URL]
# Jupyter's XSRF check and Origin check stay ON (the defaults): JupyterLab's page sends the
# _xsrf cookie back as X-XSRFToken, and the Origin check passes when the proxy forwards the
# client's Host header (authgate's default). exec's jupyter: killing this PID stops it (and,
# on SIGTERM, the kernels it started).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 PORT ROOT_DIR [BASE_URL]" >&2
  exit 2
fi
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${WEBAPPS_VENV:-$root/target/webapps-venv}"
mkdir -p "$2"
notebooks="$(cd "$2" && pwd)"
# Private config, data and runtime dirs (JUPYTER_HOME, default a new temp dir): nothing read
# from or written to the real home.
jhome="${JUPYTER_HOME:-$(mktemp -d "${TMPDIR:-/tmp}/authgate-jupyter.XXXXXX")}"
mkdir -p "$jhome"
export HOME="$jhome" JUPYTER_CONFIG_DIR="$jhome/config" JUPYTER_DATA_DIR="$jhome/data"
export JUPYTER_RUNTIME_DIR="$jhome/runtime" IPYTHONDIR="$jhome/ipython"
export JUPYTER_PLATFORM_DIRS=1 PYTHONDONTWRITEBYTECODE=1
# Kernels run with the venv's python (ipykernel comes with jupyterlab).
export PATH="$venv/bin:$PATH"
args=(
  --no-browser
  --allow-root
  --ServerApp.ip=127.0.0.1
  --ServerApp.port="$1"
  --ServerApp.port_retries=0
  --ServerApp.root_dir="$notebooks"
  --IdentityProvider.token=
  --PasswordIdentityProvider.hashed_password=
  --PasswordIdentityProvider.password_required=False
  # The public Host is the gateway's; Jupyter's DNS-rebinding check would refuse a non-local one.
  --ServerApp.allow_remote_access=True
  --LabApp.news_url=None
  --LabApp.extension_manager=readonly
  --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate
  --ServerApp.terminals_enabled=False
)
if [ $# -ge 3 ] && [ -n "$3" ]; then
  args+=(--ServerApp.base_url="$3")
fi
exec "$venv/bin/jupyter-lab" "${args[@]}"
