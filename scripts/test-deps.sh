#!/usr/bin/env bash
# System packages that only the tests need: redis-server and redis-cli (the rate-limit tests start
# real servers, a Redis Cluster created with redis-cli, and Sentinel groups run by redis-server), and
# Debian's chromium (the dashboard's browser tests drive it with playwright-core; no browser is
# downloaded from anywhere else).
# `npm test` runs this after scripts/setup.sh (pretest); the demo does not need it (it runs without
# Redis). Quick and silent when everything is there. When something is missing and we are root,
# installs it with apt, waiting for a dpkg/apt lock held by another apt run instead of failing;
# otherwise says what to install and leaves the tests that need it to fail with their own message.
set -euo pipefail

# Debian's redis-server depends on redis-tools (redis-cli); both are checked in case only one is there.
declare -A package_of=([redis-server]=redis-server [redis-cli]=redis-tools [chromium]=chromium)
commands=(redis-server redis-cli chromium)
missing=()
for cmd in "${commands[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${package_of[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "test-deps: ${missing[*]} not found: the tests that need it will fail." >&2
  echo "test-deps: install it first, e.g. sudo apt-get install ${missing[*]}" >&2
  exit 0
fi

# Another apt or dpkg run (unattended-upgrades on a fresh machine, a parallel install) may hold
# the locks. `install` waits for the dpkg lock itself (DPkg::Lock::Timeout); `update` takes the
# lists lock, which that option does not cover on every apt version, so it is retried for up to
# about 10 minutes.
lock_wait=(-o DPkg::Lock::Timeout=600)
echo "test-deps: installing ${missing[*]} from Debian's packages"
for ((attempt = 1; ; attempt++)); do
  if apt-get "${lock_wait[@]}" -qq update; then break; fi
  if [ "$attempt" -ge 60 ]; then
    echo "test-deps: apt-get update kept failing (is another apt run holding the lock?)" >&2
    exit 1
  fi
  echo "test-deps: apt-get update failed (attempt $attempt), retrying in 10 s" >&2
  sleep 10
done
DEBIAN_FRONTEND=noninteractive apt-get "${lock_wait[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
for cmd in "${commands[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || { echo "test-deps: $cmd still not found after apt-get install" >&2; exit 1; }
done
echo "test-deps: installed ${missing[*]}"
