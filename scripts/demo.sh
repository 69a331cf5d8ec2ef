#!/usr/bin/env bash
# `npm run demo`: a local Consul, a few self-registering demo services, and the gateway in front.
#
#   - uses the Consul already answering on 127.0.0.1:8500, or starts `consul agent -dev` (logs and
#     data under .demo/);
#   - starts demo services: web v1 x2, web v2 x1 (tags urlprefix-/web + v1|v2) and api x1
#     (tag "urlprefix-/api strip=/api"), logs in .demo/<id>.log;
#   - starts inventory x1 (no urlprefix tag: routed by policies/routes/inventory.yaml) and two
#     backends that are not in Consul on 127.0.0.1:9000/9001 (the static route /legacy);
#   - starts a redis-server on a free loopback port when one is installed (shared rate limits);
#   - runs the gateway in the foreground on 127.0.0.1:8080 (admin 127.0.0.1:9901) with the example
#     policies in policies/.
# Ctrl-C (or SIGTERM) stops the gateway, the demo services and the Consul this script started.
#
# One demo at a time: .demo/demo.pid names the running one, and a second `npm run demo` (or anything
# else on 127.0.0.1:8080 or :9901) makes this script refuse before it starts anything. Every
# process it starts is recorded in .demo/children (PID, start time, role); a small watcher stops
# exactly those, by PID, within a couple of seconds if this script dies without cleaning up (even
# by SIGKILL, where traps do not run), and the demo services also deregister and exit on their own
# once this script is gone (--exit-with-parent).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
demo="$root/.demo"
consul_port=8500
consul_addr="http://127.0.0.1:$consul_port"
listen=127.0.0.1:8080
admin=127.0.0.1:9901

# Every background job gets its own process group, so a Ctrl-C reaches only this script, which
# then shuts everything down in order (gateway, services, Consul) instead of all at once.
set -m

say() { printf '\033[1mdemo:\033[0m %s\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

consul_pid=""
gateway_pid=""
redis_pid=""
service_pids=()
service_ids=()
pidfile="$demo/demo.pid"
children="$demo/children"
owns_pidfile=""

# Identity of a live process: its start time in clock ticks since boot (field 22 of
# /proc/PID/stat), so that a PID reused by an unrelated process is never taken for one of ours.
# Prints nothing (and fails) when the PID is gone or a zombie; "-" where there is no /proc.
proc_start() {
  local pid=$1 stat rest
  if [ -d /proc/self ]; then
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    rest=${stat##*) } # the fields after "(comm)", which may itself hold spaces
    set -- $rest
    [ "$1" != Z ] || return 1
    echo "${20}"
  else
    kill -0 "$pid" 2>/dev/null || return 1
    echo -
  fi
}
# Whether PID is still the process recorded with start time START.
same_proc() { local now; now=$(proc_start "$1") && [ "$now" = "$2" ]; }

# Remember a process this script started (for the watcher and for a later demo's clean-up).
record() { local start; start=$(proc_start "$1") || start=-; echo "$1 $start $2" >>"$children"; }

# Wait until a process is gone (up to $2 tenths of a second), then SIGKILL it. Works for processes
# that are not our children too (the watcher's case), treating a zombie as gone.
await_pid() {
  local pid=$1 tenths=$2 start i
  start=$(proc_start "$pid") || { wait "$pid" 2>/dev/null || true; return 0; }
  for ((i = 0; i < tenths; i++)); do
    same_proc "$pid" "$start" || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  same_proc "$pid" "$start" && kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# Stop one process we started, by PID: SIGTERM, wait up to ~5 s, then SIGKILL.
stop_pid() {
  kill -0 "$1" 2>/dev/null || return 0
  kill -TERM "$1" 2>/dev/null || return 0
  await_pid "$1" 50
}

# Stop what .demo/children lists, by PID and only while the PID still is the process recorded:
# gateway, then demo services (signalled together; each deregisters, then exits), then redis and
# consul. Used by the watcher after this script died, and at start for a demo that left no
# watcher behind either.
stop_recorded() {
  local file=$1 pid start role
  [ -s "$file" ] || return 0
  for role in gateway service redis consul; do
    local pids=()
    while read -r pid start r; do
      [ "$r" = "$role" ] || continue
      if [ "$start" = - ]; then kill -0 "$pid" 2>/dev/null || continue; else same_proc "$pid" "$start" || continue; fi
      echo "stopping $role (pid $pid)"
      kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    done <"$file"
    # A demo service needs a moment to deregister before Consul may go.
    for pid in ${pids[@]+"${pids[@]}"}; do await_pid "$pid" 100; done
  done
}

# The watcher: a background subshell (own process group, output to .demo/watcher.log) that polls
# this script's PID once a second; once it is gone without having cleaned up, it stops what the
# script had started. After a normal exit it finds .demo/children gone and just ends.
watch_demo() {
  local demo_pid=$1 demo_start
  set +e
  demo_start=$(proc_start "$demo_pid") || exit 0
  while same_proc "$demo_pid" "$demo_start"; do sleep 1; done
  if [ -s "$children" ]; then
    echo "demo (pid $demo_pid) is gone; stopping what it started"
    stop_recorded "$children"
    rm -f "$children"
  fi
  [ "$(cat "$pidfile" 2>/dev/null)" = "$demo_pid" ] && rm -f "$pidfile"
  exit 0
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "$gateway_pid" ]; then stop_pid "$gateway_pid"; fi
  if [ "${#service_pids[@]}" -gt 0 ]; then
    say "stopping demo services"
    # Signal them all once (each deregisters itself, then exits), then wait for each.
    for pid in "${service_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${service_pids[@]}"; do await_pid "$pid" 100; done
  fi
  if [ -n "$redis_pid" ]; then stop_pid "$redis_pid"; fi
  if [ -n "$consul_pid" ]; then
    say "stopping consul (pid $consul_pid)"
    stop_pid "$consul_pid"
  fi
  if [ -n "$owns_pidfile" ]; then
    rm -f "$children"
    [ "$(cat "$pidfile" 2>/dev/null)" = "$$" ] && rm -f "$pidfile"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# GET a URL; prints the body, fails if unreachable or not 2xx.
http_get() {
  if command -v curl >/dev/null 2>&1; then
    curl -fsS -m 2 "$1" 2>/dev/null
  else
    node -e 'fetch(process.argv[1], { signal: AbortSignal.timeout(2000) })
      .then(async (r) => { if (!r.ok) process.exit(1); process.stdout.write(await r.text()); })
      .catch(() => process.exit(1))' "$1"
  fi
}
consul_answers() { http_get "$consul_addr/v1/status/leader" >/dev/null; }
consul_has_leader() { local l; l=$(http_get "$consul_addr/v1/status/leader") && [ -n "$l" ] && [ "$l" != '""' ]; }

# --- prerequisites -------------------------------------------------------------------------------
command -v node >/dev/null 2>&1 || die "node (>= 20.10) is required"
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=10)?0:1)' \
  || die "node >= 20.10 is required (found $(node --version))"
[ -d node_modules/commander ] || die "dependencies are missing: run 'npm ci' first"
# The gateway and the demo services run compiled (`npm run demo` runs scripts/setup.sh first,
# which builds what changed).
[ -f dist/cli/main.js ] && [ -f dist/scripts/demo-service.js ] || die "dist/ is missing: run 'npm run build' first"
mkdir -p "$demo"

# --- one demo at a time --------------------------------------------------------------------------
# Whether PID is a live `scripts/demo.sh` other than this one.
is_demo() {
  local pid=$1 args
  [ -n "$pid" ] && [ "$pid" != "$$" ] && kill -0 "$pid" 2>/dev/null || return 1
  args=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || ps -o args= -p "$pid" 2>/dev/null) || return 1
  [[ $args == *scripts/demo.sh* ]]
}
# Whether something accepts TCP connections on 127.0.0.1:PORT.
port_busy() {
  node -e 'const s = require("net").connect(Number(process.argv[1]), "127.0.0.1");
    s.on("connect", () => process.exit(0)).on("error", () => process.exit(1));
    setTimeout(() => process.exit(1), 2000)' "$1"
}
# Create .demo/demo.pid only if it does not exist yet (two demos starting at once: one wins).
claim() { (set -o noclobber; echo "$$" >"$pidfile") 2>/dev/null; }

if ! claim; then
  other=$(cat "$pidfile" 2>/dev/null || true)
  if is_demo "$other"; then
    die "a demo is already running (pid $other, see .demo/demo.pid): use it, or stop it first (Ctrl-C in its terminal, or kill $other)"
  fi
  rm -f "$pidfile" # that demo is gone
  claim || die "another demo is starting right now (.demo/demo.pid); stop it first"
fi
owns_pidfile=1
# A demo that died together with its watcher may have left processes behind: stop exactly those.
if [ -s "$children" ]; then
  say "stopping what an earlier demo left running"
  stop_recorded "$children" | sed 's/^/  /'
fi
: >"$children"
for port in "${listen##*:}" "${admin##*:}"; do
  if port_busy "$port"; then
    die "127.0.0.1:$port is already in use (another demo or cgw?); stop it first"
  fi
done
watch_demo "$$" </dev/null >"$demo/watcher.log" 2>&1 &

bash scripts/install-consul.sh
if command -v consul >/dev/null 2>&1; then
  consul_bin=$(command -v consul)
elif [ -x "$root/.tools/bin/consul" ]; then
  consul_bin="$root/.tools/bin/consul"
else
  die "no consul binary after scripts/install-consul.sh"
fi

# --- consul --------------------------------------------------------------------------------------
if consul_answers; then
  say "using the Consul already answering on $consul_addr"
else
  say "starting consul agent -dev on $consul_addr (log: .demo/consul.log)"
  "$consul_bin" agent -dev -client 127.0.0.1 -bind 127.0.0.1 -http-port "$consul_port" \
    -data-dir "$demo/consul-data" -hcl 'disable_update_check = true' >"$demo/consul.log" 2>&1 &
  consul_pid=$!
  record "$consul_pid" consul
fi
for ((i = 0; i < 300; i++)); do # up to ~30 s
  consul_has_leader && break
  if [ -n "$consul_pid" ] && ! kill -0 "$consul_pid" 2>/dev/null; then
    tail -n 20 "$demo/consul.log" >&2 || true
    die "consul exited during startup (is port $consul_port or 8300-8302/8600 in use?)"
  fi
  sleep 0.1
done
consul_has_leader || die "Consul on $consul_addr has no leader after 30 s"
export CONSUL_HTTP_ADDR="127.0.0.1:$consul_port"

# --- demo services -------------------------------------------------------------------------------
# start_service ID ARGS...: one demo service (scripts/demo-service.ts, compiled) on a free port,
# logging to .demo/ID.log.
start_service() {
  local id=$1
  shift
  node dist/scripts/demo-service.js --consul "$consul_addr" --id "$id" --port 0 --exit-with-parent "$@" \
    >"$demo/$id.log" 2>&1 &
  service_pids+=("$!")
  service_ids+=("$id")
  record "$!" service
}
say "starting demo services (logs: .demo/<id>.log)"
start_service web-v1-1 --name web --tags "urlprefix-/web,v1" --color blue
start_service web-v1-2 --name web --tags "urlprefix-/web,v1" --color blue
start_service web-v2-1 --name web --tags "urlprefix-/web,v2" --color green
start_service api-1 --name api --tags "urlprefix-/api strip=/api"
start_service inventory-1 --name inventory --tags "v1"
start_service legacy-a --name legacy-billing --port 9000 --no-register --color red
start_service legacy-b --name legacy-billing --port 9001 --no-register --color red

ids=(web-v1-1 web-v1-2 web-v2-1 api-1 inventory-1)
for ((i = 0; i < 300; i++)); do # up to ~30 s
  missing=0
  for id in "${ids[@]}"; do
    http_get "$consul_addr/v1/agent/service/$id" >/dev/null || missing=$((missing + 1))
  done
  [ "$missing" -eq 0 ] && break
  for j in "${!service_pids[@]}"; do
    if ! kill -0 "${service_pids[$j]}" 2>/dev/null; then
      cat "$demo/${service_ids[$j]}.log" >&2 || true
      die "demo service ${service_ids[$j]} exited during startup"
    fi
  done
  sleep 0.1
done
[ "$missing" -eq 0 ] || die "demo services did not register within 30 s (see .demo/*.log)"
say "registered: web (v1 x2, v2 x1), api x1, inventory x1 (untagged); legacy-billing on :9000/:9001 (not in Consul)"

# --- redis (optional) ----------------------------------------------------------------------------
redis_args=()
if command -v redis-server >/dev/null 2>&1; then
  redis_port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
  say "starting redis-server on 127.0.0.1:$redis_port for shared rate limits (log: .demo/redis.log)"
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$demo/redis.log" 2>&1 &
  redis_pid=$!
  record "$redis_pid" redis
  redis_args=(--redis "redis://127.0.0.1:$redis_port")
else
  say "redis-server not installed: rate limits are counted per gateway (apt-get install redis-server)"
fi

# --- gateway -------------------------------------------------------------------------------------
# The dashboard's controls (canary weights, rollout buttons) need an admin token; reads on loopback
# do not. A fresh random token per demo, kept in .demo/admin-token (mode 0600).
admin_token_file="$demo/admin-token"
(umask 077 && node -e 'process.stdout.write(require("crypto").randomBytes(24).toString("base64url"))' >"$admin_token_file")
admin_token=$(cat "$admin_token_file")

cat <<EOF

  Gateway: http://$listen   admin: http://$admin   Consul UI: $consul_addr/ui
  Dashboard: http://$admin/ui   (admin token for its controls: $admin_token, also in .demo/admin-token)

  Try this (in another terminal):
    curl localhost:8080/web
    bin/cgw services
    bin/cgw canary set web v1=90 v2=10
    curl -H 'X-Canary: v2' localhost:8080/web
    bin/cgw status

  Policies (loaded from policies/, see the README's Policies section):
    bin/cgw policies
    bin/cgw routes                                 # /inventory is polled, /legacy is static
    curl -i localhost:8080/legacy/                 # 401: /legacy wants an API key
    bin/cgw consumer add acme --plan partner-gold --scopes billing:read
    curl -i -H "x-partner-key: <the key printed above>" localhost:8080/legacy/
    bin/cgw consumer revoke acme                   # the key stops working within a second

  Ctrl-C stops everything.

EOF
# Not `exec`: this shell stays to stop the services and Consul when the gateway ends.
node dist/cli/main.js start --consul "$consul_addr" --listen "$listen" --admin "$admin" \
  --admin-token-file "$admin_token_file" --policies policies "${redis_args[@]}" &
gateway_pid=$!
record "$gateway_pid" gateway
set +e
wait "$gateway_pid"
status=$?
set -e
gateway_pid=""
exit "$status"
