#!/usr/bin/env bash
# Makes a fresh checkout runnable: npm dependencies and a Consul binary (scripts/install-consul.sh;
# an existing `consul` on PATH wins). No system packages: the demo runs without Redis, and the
# packages only the tests need come from scripts/test-deps.sh. Quick and silent when everything is
# already there; `npm run demo` and `npm test` call it first.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [ ! -x node_modules/.bin/tsx ] || [ ! -d node_modules/undici ]; then
  echo "setup: installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error
fi

if ! command -v consul >/dev/null 2>&1 && [ ! -x .tools/bin/consul ]; then
  bash scripts/install-consul.sh
fi
