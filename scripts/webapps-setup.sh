#!/usr/bin/env bash
# Installs the third-party web apps the browser tests put behind the gateway (tests/apps/):
# Django, Streamlit, JupyterLab and gunicorn from PyPI, pinned, into a venv under target/ so the
# system Python is untouched. Idempotent: a marker file records the installed set, and a second
# run with the same pins returns at once. Prints the venv's python path on stdout (last line).
set -euo pipefail
cd "$(dirname "$0")/.."

PINS=(
  "Django==5.2.19"
  "streamlit==1.67.0"
  "jupyterlab==4.6.6"
  "gunicorn==27.0.1"
)

venv="target/webapps-venv"
marker="$venv/.authgate-pins"
py="$PWD/$venv/bin/python"
want="$(printf '%s\n' "${PINS[@]}")"

if [ -x "$py" ] && [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ]; then
  echo "$py"
  exit 0
fi

if [ ! -x "$py" ]; then
  echo "creating venv $venv" >&2
  mkdir -p target
  python3 -m venv "$venv"
fi
echo "installing from PyPI: ${PINS[*]}" >&2
"$py" -m pip install -q --disable-pip-version-check "${PINS[@]}"
printf '%s\n' "${PINS[@]}" > "$marker"
echo "$py"
