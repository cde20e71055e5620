#!/usr/bin/env bash
# Several Docker hosts on this machine, for the multi-host drills and `make chaos`.
#   testbed/hosts.sh up N       N extra hosts (idempotent: running hosts are left alone)
#   testbed/hosts.sh down       removes every host of this state dir: nothing is left
#   testbed/hosts.sh lose K     host K lost at once: agent, registrar, engine and containers SIGKILLed
#   testbed/hosts.sh restore K  host K back: engine, the containers that ran when it was lost, agent, registrar
#   testbed/hosts.sh restart-agent K   host K's Consul agent stopped (SIGINT) and started again
#   testbed/hosts.sh status     the state file (JSON)
# Host K (1..N; index k = MEDIC_HOSTS_OFFSET + K) is:
#   - a dockerd of its own: socket, data-root, exec-root, pid file, its own managed containerd
#     (containerd namespaces medic-hostk / medic-hostk-plugins), bridge medicbrk (10.213.k.1/24,
#     created here), no iptables/masquerade/ip_forward changes, ports published on 127.0.0.(10+k)
#     (--ip), engine name medic-hostk (own UTS namespace), containers under cgroup medic-hostk;
#   - a Consul client agent "medic-hostk" on 127.0.0.(10+k) (HTTP :8500, serf :8301) joined to
#     MEDIC_HOSTS_JOIN (default 127.0.0.2, the testbed/consul.sh cluster);
#   - medic-register (the venv's) with DOCKER_HOST=that engine, pointed at that agent,
#     --hostname/--registrar-id medic-hostk.
# With MEDIC_HOSTS_SPECS=DIR the agent also loads a consul.d rendered by medic-config for that
# host (its watches run medic-heal with DOCKER_HOST set: docs/topology.md); audit logs per host.
# Every process of host K runs in the cgroup medic-hostk (cgroup v2 hierarchy, cgroup.kill):
# `lose` and `down` kill the whole host at once, and `down` checks nothing is left.
# State: $MEDIC_TESTBED_DIR/hosts (default .testbed/hosts), hosts.json lists what tests need.
# Loopback and our own bridges only. Needs root, dockerd, consul, the venv (make venv).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
state=${MEDIC_HOSTS_DIR:-${MEDIC_TESTBED_DIR:-$root/.testbed}/hosts}
offset=${MEDIC_HOSTS_OFFSET:-0}
join=${MEDIC_HOSTS_JOIN:-127.0.0.2}
image=${MEDIC_DEMO_IMAGE:-medic-demo:latest}
specs=${MEDIC_HOSTS_SPECS:-}
reconcile=${MEDIC_HOSTS_RECONCILE:-30s}
resync=${MEDIC_HOSTS_RESYNC:-30}
loglevel=${MEDIC_HOSTS_LOG_LEVEL:-INFO}
bin=$root/.venv/bin
export PATH="$bin:$PATH"
log() { printf 'hosts: %s\n' "$*" >&2; }

cg_v2() {  # the cgroup v2 mount (hybrid: /sys/fs/cgroup/unified)
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then echo /sys/fs/cgroup
  elif [ -f /sys/fs/cgroup/unified/cgroup.procs ]; then echo /sys/fs/cgroup/unified
  else log "no cgroup v2 hierarchy (need cgroup.kill)"; return 1; fi
}

k_of() { echo $((offset + $1)); }
name_of() { echo "medic-host$(k_of "$1")"; }
ip_of() { echo "127.0.0.$((10 + $(k_of "$1")))"; }
br_of() { echo "medicbr$(k_of "$1")"; }
dir_of() { echo "$state/host$1"; }
sock_of() { echo "$(dir_of "$1")/docker.sock"; }
cg_of() { echo "$(cg_v2)/$(name_of "$1")"; }

alive_pid() {  # PIDFILE (under hostK/): alive AND in host K's cgroup, so a reused pid is never ours to signal
  [ -f "$1" ] || return 1
  local pid k; pid=$(cat "$1"); k=${1%/*}; k=${k##*/host}
  kill -0 "$pid" 2>/dev/null && grep -qx "0::/$(name_of "$k")" "/proc/$pid/cgroup" 2>/dev/null
}

in_host() {  # K logfile pidfile argv...: run argv in host K's cgroup (and UTS namespace), detached
  local k=$1 logf=$2 pidf=$3; shift 3
  local cg; cg=$(cg_of "$k"); mkdir -p "$cg"
  nohup setsid unshare --uts sh -c 'hostname "$1"; echo $$ > "$2/cgroup.procs"; shift 2; exec "$@"' \
    sh "$(name_of "$k")" "$cg" "$@" >>"$logf" 2>&1 </dev/null &
  echo $! > "$pidf"
  for _ in $(seq 1 100); do alive_pid "$pidf" && return 0; sleep 0.02; done  # until it joined the cgroup
}

engine_env() { echo "unix://$(sock_of "$1")"; }

wait_engine() {  # K
  local d; d=$(dir_of "$1")
  for _ in $(seq 1 150); do
    if DOCKER_HOST=$(engine_env "$1") docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then return 0; fi
    if ! alive_pid "$d/dockerd.pid"; then log "engine of host $1 exited:"; tail -5 "$d/dockerd.log" >&2; return 1; fi
    sleep 0.2
  done
  log "engine of host $1 did not answer in 30 s"; tail -5 "$d/dockerd.log" >&2; return 1
}

start_engine() {  # K
  local k=$1 d; d=$(dir_of "$k")
  local n kk br
  n=$(name_of "$k"); kk=$(k_of "$k"); br=$(br_of "$k")
  alive_pid "$d/dockerd.pid" && return 0
  mkdir -p "$d/docker" "$d/exec"
  if ! ip link show "$br" >/dev/null 2>&1; then
    ip link add "$br" type bridge
    ip addr add "10.213.$kk.1/24" dev "$br"
  fi
  ip link set "$br" up
  rm -f "$(sock_of "$k")" "$d/dockerd.pid.engine"
  echo '{}' > "$d/daemon.json"  # not /etc/docker/daemon.json: that one configures the first engine
  in_host "$k" "$d/dockerd.log" "$d/dockerd.pid" dockerd --config-file "$d/daemon.json" --data-root "$d/docker" \
    --exec-root "$d/exec" \
    --pidfile "$d/dockerd.pid.engine" -H "unix://$(sock_of "$k")" -b "$br" --ip "$(ip_of "$k")" \
    --iptables=false --ip-masq=false --ip-forward=false --containerd-namespace "$n" \
    --containerd-plugins-namespace "$n-plugins" --cgroup-parent "/$n" \
    --default-address-pool "base=10.213.$((100 + kk)).0/24,size=28"
  wait_engine "$k"
}

load_image() {  # K
  if ! DOCKER_HOST=$(engine_env "$1") docker image inspect "$image" >/dev/null 2>&1; then
    docker save "$image" | DOCKER_HOST=$(engine_env "$1") docker load -q >/dev/null
  fi
}

agent_conf() {  # K
  local d; d=$(dir_of "$1")
  mkdir -p "$d/consul/data" "$d/consul/config"
  cat > "$d/consul/config/00-host.json" <<JSON
{"node_name": "$(name_of "$1")", "bind_addr": "$(ip_of "$1")", "client_addr": "$(ip_of "$1")",
 "advertise_addr": "$(ip_of "$1")", "data_dir": "$d/consul/data", "retry_join": ["$join"],
 "retry_interval": "1s", "enable_local_script_checks": true, "disable_update_check": true,
 "leave_on_terminate": false, "skip_leave_on_interrupt": true, "log_level": "$loglevel",
 "ports": {"dns": -1, "grpc": -1}}
JSON
  if [ -n "$specs" ]; then
    medic-config --specs "$specs" --out "$d/consul.d" --audit-log "$d/audit.jsonl" \
      --consul-addr "http://$(ip_of "$1"):8500" --reconcile-interval "$reconcile" >/dev/null
  fi
}

start_agent() {  # K
  local k=$1 d; d=$(dir_of "$k")
  alive_pid "$d/agent.pid" && return 0
  local args=(consul agent -config-dir "$d/consul/config")
  [ -d "$d/consul.d" ] && args+=(-config-dir "$d/consul.d")
  DOCKER_HOST=$(engine_env "$k") MEDIC_AUDIT_LOG=$d/audit.jsonl CONSUL_HTTP_ADDR=http://$(ip_of "$k"):8500 \
    in_host "$k" "$d/agent.log" "$d/agent.pid" "${args[@]}"
  for _ in $(seq 1 150); do
    if curl -fsS --max-time 1 "http://$(ip_of "$k"):8500/v1/catalog/node/$(name_of "$k")" 2>/dev/null \
         | grep -q '"Node"'; then return 0; fi
    alive_pid "$d/agent.pid" || { log "agent of host $k exited:"; tail -5 "$d/agent.log" >&2; return 1; }
    sleep 0.2
  done
  log "agent of host $k did not join $join in 30 s"; tail -5 "$d/agent.log" >&2; return 1
}

start_registrar() {  # K
  local k=$1 d; d=$(dir_of "$k")
  alive_pid "$d/register.pid" && return 0
  local heal=()  # this host's agent runs medic-heal: the registrar starts it when Consul has no leader
  [ -n "$specs" ] && heal=(--heal-fallback --specs "$specs" --heal-audit-log "$d/audit.jsonl")
  DOCKER_HOST=$(engine_env "$k") in_host "$k" "$d/register.log" "$d/register.pid" \
    medic-register --consul-addr "http://$(ip_of "$k"):8500" --hostname "$(name_of "$k")" \
    --registrar-id "$(name_of "$k")" --resync "$resync" --audit-log "$d/register.jsonl" "${heal[@]}"
}

write_state() {
  local first=1 d k
  {
    printf '{"root": "%s", "offset": %d, "join": "%s", "specs": "%s", "hosts": [' "$state" "$offset" "$join" "$specs"
    for d in "$state"/host*; do
      [ -d "$d" ] || continue
      k=${d##*/host}
      [ $first = 1 ] || printf ', '
      first=0
      printf '{"index": %d, "name": "%s", "ip": "%s", "docker_host": "%s",' "$k" "$(name_of "$k")" "$(ip_of "$k")" \
        "$(engine_env "$k")"
      printf ' "bridge": "%s", "subnet": "10.213.%d.0/24",' \
        "$(br_of "$k")" "$(k_of "$k")"
      printf ' "consul_addr": "http://%s:8500", "node": "%s", "cgroup": "%s", "dir": "%s",' \
        "$(ip_of "$k")" "$(name_of "$k")" "$(cg_of "$k")" "$d"
      printf ' "audit_log": "%s", "register_log": "%s", "agent_log": "%s",' "$d/audit.jsonl" "$d/register.jsonl" \
        "$d/agent.log"
      printf ' "pids": {"dockerd": %s, "agent": %s, "register": %s}, "lost": %s}' \
        "$(cat "$d/dockerd.pid" 2>/dev/null || echo null)" "$(cat "$d/agent.pid" 2>/dev/null || echo null)" \
        "$(cat "$d/register.pid" 2>/dev/null || echo null)" "$([ -f "$d/lost" ] && echo true || echo false)"
    done
    printf ']}\n'
  } > "$state/hosts.json.tmp"
  mv "$state/hosts.json.tmp" "$state/hosts.json"
}

start_host() {  # K
  start_engine "$1"
  load_image "$1"
  agent_conf "$1"
  start_agent "$1"
  start_registrar "$1"
}

cg_pids() { [ -f "$1/cgroup.procs" ] && cat "$1/cgroup.procs" "$1"/*/cgroup.procs 2>/dev/null | sort -u || true; }

kill_cgroup() {  # K: every process of host K, at once
  local cg; cg=$(cg_of "$1")
  [ -d "$cg" ] || return 0
  echo 1 > "$cg/cgroup.kill"
  for _ in $(seq 1 100); do [ -z "$(cg_pids "$cg")" ] && return 0; sleep 0.05; done
  log "host $1: processes left in $cg: $(cg_pids "$cg" | tr '\n' ' ')"; return 1
}

unmount_under() {  # DIR: every mount below it (overlays, netns, shm), deepest first
  local m
  for m in $(findmnt -rn -o TARGET | grep -F "$1/" | sort -r || true); do umount -l "$m" 2>/dev/null || true; done
}

lose() {  # K
  local k=$1 d; d=$(dir_of "$k")
  [ -d "$d" ] || { log "no host $k"; return 1; }
  DOCKER_HOST=$(engine_env "$k") docker ps -q --no-trunc > "$d/lost.running" 2>/dev/null || : > "$d/lost.running"
  kill_cgroup "$k"
  unmount_under "$d"
  rm -f "$d"/*.pid "$d/dockerd.pid.engine" "$(sock_of "$k")"
  touch "$d/lost"
  write_state
  log "host $k ($(name_of "$k")) lost: $(wc -l < "$d/lost.running") container(s) were running"
}

restore() {  # K: the host comes back as it was (a host whose containers restart on boot)
  local k=$1 d; d=$(dir_of "$k")
  [ -d "$d" ] || { log "no host $k"; return 1; }
  start_engine "$k"
  if [ -s "$d/lost.running" ] && [ "${MEDIC_HOSTS_RESTART_CONTAINERS:-1}" = 1 ]; then
    # shellcheck disable=SC2046
    DOCKER_HOST=$(engine_env "$k") docker start $(cat "$d/lost.running") >/dev/null 2>&1 || true
  fi
  start_agent "$k"
  start_registrar "$k"
  rm -f "$d/lost" "$d/lost.running"
  write_state
  log "host $k ($(name_of "$k")) restored"
}

restart_agent() {  # K
  local k=$1 d; d=$(dir_of "$k")
  if alive_pid "$d/agent.pid"; then
    kill -INT "$(cat "$d/agent.pid")" 2>/dev/null || true
    for _ in $(seq 1 100); do alive_pid "$d/agent.pid" || break; sleep 0.1; done
  fi
  start_agent "$k"
  write_state
}

stop_host() {  # K: graceful where possible, then nothing left
  local k=$1 d; d=$(dir_of "$k")
  alive_pid "$d/register.pid" && kill -TERM "$(cat "$d/register.pid")" 2>/dev/null || true
  if alive_pid "$d/agent.pid"; then  # leave the cluster for good (a restart does not leave)
    consul leave -http-addr="$(ip_of "$k"):8500" >/dev/null 2>&1 \
      || kill -TERM "$(cat "$d/agent.pid")" 2>/dev/null || true
    for _ in $(seq 1 50); do alive_pid "$d/agent.pid" || break; sleep 0.1; done
  fi
  if alive_pid "$d/dockerd.pid"; then
    local ids; ids=$(DOCKER_HOST=$(engine_env "$k") docker ps -aq 2>/dev/null || true)
    # shellcheck disable=SC2086
    [ -z "$ids" ] || DOCKER_HOST=$(engine_env "$k") docker rm -f $ids >/dev/null 2>&1 || true
    kill -TERM "$(cat "$d/dockerd.pid")" 2>/dev/null || true
    for _ in $(seq 1 100); do alive_pid "$d/dockerd.pid" || break; sleep 0.1; done
  fi
  kill_cgroup "$k"
  unmount_under "$d"
  local cg; cg=$(cg_of "$k")
  [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  for h in /sys/fs/cgroup/*/"$(name_of "$k")"; do
    [ -d "$h" ] && find "$h" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  ip link del "$(br_of "$k")" 2>/dev/null || true
  rm -rf "$d"
}

up() {
  local n=${1:?usage: hosts.sh up N}
  command -v dockerd >/dev/null && command -v consul >/dev/null || { log "needs dockerd and consul"; return 1; }
  [ -x "$bin/medic-register" ] || { log "needs the venv: make venv"; return 1; }
  docker image inspect "$image" >/dev/null 2>&1 || { log "no $image on the first engine: make testbed"; return 1; }
  cg_v2 >/dev/null
  mkdir -p "$state"
  for k in $(seq 1 "$n"); do
    log "host $k: $(name_of "$k") engine $(engine_env "$k"), agent $(ip_of "$k"):8500"
    start_host "$k" || { write_state; return 1; }
  done
  write_state
  log "up: $n host(s); state in $state/hosts.json"
}

down() {
  [ -d "$state" ] || { log "down (nothing here)"; return 0; }
  for d in "$state"/host*; do
    [ -d "$d" ] || continue
    stop_host "${d##*/host}"
  done
  local left=""
  for d in "$state"/host*; do [ -d "$d" ] && left="$left $d"; done
  rm -f "$state/hosts.json"
  rmdir "$state" 2>/dev/null || true
  [ -z "$left" ] || { log "left behind:$left"; return 1; }
  log "down"
}

case ${1:-} in
  up) up "${2:-}" ;;
  down) down ;;
  lose) lose "${2:?host index}" ;;
  restore) restore "${2:?host index}" ;;
  restart-agent) restart_agent "${2:?host index}" ;;
  status) cat "$state/hosts.json" ;;
  *) echo "usage: $0 up N | down | lose K | restore K | restart-agent K | status" >&2; exit 2 ;;
esac
