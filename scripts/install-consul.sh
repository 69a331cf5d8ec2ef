#!/usr/bin/env bash
# Installs a Consul binary for development and CI.
# Prefers a `consul` already on PATH so users keep their own. Otherwise fetches Debian's
# bullseye `consul` package (1.8.7, a static binary) with apt, reusing the mirror URI that this
# machine's apt sources already name, and unpacks it under .tools/ (no root needed to use it).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools"
if command -v consul >/dev/null 2>&1; then
  echo "consul: using $(command -v consul) ($(consul version | head -n1))"
  exit 0
fi
if [ -x "$tools/bin/consul" ]; then
  echo "consul: using $tools/bin/consul ($("$tools/bin/consul" version | head -n1))"
  exit 0
fi

uri=""
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  # First deb822 stanza whose suites include a Debian release (not -security).
  uri=$(awk '/^URIs:/ {u=$2} /^Suites:/ && u != "" && $0 !~ /security/ {print u; exit}' "$f")
  [ -n "$uri" ] && break
done
if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
  uri=$(awk '$1=="deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
fi
[ -n "$uri" ] || { echo "consul: no Debian mirror found in apt sources" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/archives/partial"
cat > "$work/bullseye.sources" <<SRC
Types: deb
URIs: $uri
Suites: bullseye
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
apt_opts=(-o "Dir::Etc::sourcelist=$work/bullseye.sources" -o "Dir::Etc::sourceparts=-"
  -o "Dir::State::Lists=$work/lists" -o "Dir::Cache::archives=$work/archives"
  -o "APT::Get::List-Cleanup=0" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")
apt-get "${apt_opts[@]}" -qq update
(cd "$work" && apt-get "${apt_opts[@]}" -qq download consul)
deb=$(ls "$work"/consul_*.deb | head -n1)
dpkg-deb -x "$deb" "$work/x"
mkdir -p "$tools/bin"
cp "$work/x/usr/bin/consul" "$tools/bin/consul"
chmod +x "$tools/bin/consul"
echo "consul: installed $tools/bin/consul ($("$tools/bin/consul" version | head -n1))"
