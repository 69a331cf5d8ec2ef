#!/usr/bin/env bash
# Makes a fresh checkout runnable: npm dependencies and a Consul binary (and, as root, the Debian
# packages the tests use). Quick and silent when everything is already there; `npm test` and
# `npm run demo` call it first.
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

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ${missing[*]} from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: ${missing[*]} not found; install them (apt-get install ${missing[*]}) for the full test suite" >&2
  fi
fi
