#!/usr/bin/env bash
# Runs the Django test site on 127.0.0.1:PORT with gunicorn (2 sync workers), data in DATA_DIR.
# Usage: tests/apps/django_site/run.sh PORT DATA_DIR
# Needs the venv from scripts/webapps-setup.sh (or PYTHON=/path/to/python with the pins).
# Migrates and collects static files first, then exec's gunicorn: killing this PID (SIGTERM)
# stops the server and its workers.
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 PORT DATA_DIR" >&2
  exit 2
fi
port=$1
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
mkdir -p "$2"
export DJANGO_DATA_DIR="$(cd "$2" && pwd)"
export DJANGO_SETTINGS_MODULE=site_conf.settings
export PYTHONDONTWRITEBYTECODE=1
py="${PYTHON:-$root/target/webapps-venv/bin/python}"
cd "$here"
"$py" manage.py migrate --noinput -v 0
"$py" manage.py collectstatic --noinput -v 0
exec "$py" -m gunicorn site_conf.wsgi:application \
  --bind "127.0.0.1:$port" --workers 2 --worker-class sync \
  --access-logfile - --error-logfile - --log-level warning \
  --worker-tmp-dir "$DJANGO_DATA_DIR"
