#!/usr/bin/env bash
# Makes a fresh checkout runnable: npm dependencies, a Consul binary (scripts/install-consul.sh;
# an existing `consul` on PATH wins) and the compiled JavaScript in dist/ (`npm run build`: bin/cgw,
# the demo and the tests run it). No system packages: the demo runs without Redis, and the
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

# dist/ is up to date when no source or build setting is newer than the build info tsc writes at
# the end of every build (tsc -b refreshes its date even when nothing needed compiling).
# Otherwise `tsc -b` compiles what changed, a few seconds; a first build takes longer.
stale() {
  local info=$1
  shift
  [ ! -f "$info" ] || [ -n "$(find "$@" -type f -newer "$info" -print -quit 2>/dev/null)" ]
}
if stale dist/.tsbuildinfo src tsconfig.json tsconfig.build.json ||
  stale dist/scripts/.tsbuildinfo scripts/demo-service.ts scripts/tsconfig.build.json tsconfig.json; then
  echo "setup: compiling TypeScript to dist/ (npm run build)"
  mkdir -p dist
  # One build at a time (two `npm test` runs starting together): tsc rewrites files in place.
  if command -v flock >/dev/null 2>&1; then exec 9>dist/.build.lock && flock 9; fi
  if ! npm run --silent build; then
    # tsc wrote its build info (and the JavaScript) despite the errors: date the build info back
    # so that the next run builds (and reports them) again, and bin/cgw and the tests see dist/
    # as stale meanwhile.
    touch -c -t 197001010000 dist/.tsbuildinfo dist/scripts/.tsbuildinfo 2>/dev/null || true
    echo "setup: npm run build failed (see the errors above)" >&2
    exit 1
  fi
fi
