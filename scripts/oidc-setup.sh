#!/usr/bin/env bash
# Installs the test suite's npm packages: axe-core (the accessibility checks of the browser
# tests) and the OpenID Provider the OIDC tests sign in at (tests/oidc/provider.mjs): the npm
# package oidc-provider, pinned to an exact 8.x (9.x needs Node 22) with its whole dependency
# tree pinned by tests/oidc/package-lock.json, into target/oidc-provider/ (npm ci). Idempotent:
# a marker file records the installed package.json and lock, and a second run with the same
# ones returns at once. Prints the install folder on stdout (last line).
set -euo pipefail
cd "$(dirname "$0")/.."

src="tests/oidc"
dir="target/oidc-provider"
marker="$dir/.authgate-pins"
want="$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -d' ' -f1)"

if [ -f "$dir/node_modules/oidc-provider/package.json" ] && [ -f "$marker" ] \
  && [ "$(cat "$marker")" = "$want" ]; then
  echo "$PWD/$dir"
  exit 0
fi

command -v node >/dev/null 2>&1 || { echo "node is missing (oidc-provider 8.x needs Node >= 18)" >&2; exit 1; }
command -v npm >/dev/null 2>&1 || { echo "npm is missing" >&2; exit 1; }

echo "installing from npm: oidc-provider (tests/oidc/package.json) into $dir" >&2
mkdir -p "$dir"
rm -f "$marker"
cp "$src/package.json" "$src/package-lock.json" "$dir/"
(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
echo "$want" > "$marker"
echo "$PWD/$dir"
