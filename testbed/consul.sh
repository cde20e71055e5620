#!/usr/bin/env bash
# Starts and stops the testbed's Consul, on loopback only.
#   testbed/consul.sh up dev       one dev agent on 127.0.0.1:8500 (node "monitor")
#   testbed/consul.sh up cluster   3 servers on 127.0.0.2-127.0.0.4 (raft_multiplier 1)
#                                  + a client agent on 127.0.0.1:8500 (node "monitor")
#   testbed/consul.sh down | reload | status
# The agent on 127.0.0.1 is the monitoring node: it loads the repo's consul.d/ with
# enable_local_script_checks (never enable_script_checks) and runs medic's checks and
# watches with the project's .venv/bin first on PATH. State lives in .testbed/consul/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
state=${MEDIC_TESTBED_DIR:-$root/.testbed}/consul
confd=${MEDIC_CONSUL_D:-$root/consul.d}
export PATH="$root/.venv/bin:$PATH"
log() { printf 'consul: %s\n' "$*" >&2; }

write_conf() {  # name json
  mkdir -p "$state/$1/data" "$state/$1/config"
  printf '%s\n' "$2" > "$state/$1/config/00-testbed.json"
}

start() {  # name extra-args...
  local name=$1; shift
  if [ -f "$state/$name/pid" ] && kill -0 "$(cat "$state/$name/pid")" 2>/dev/null; then
    log "$name already running"; return
  fi
  nohup setsid consul agent -config-dir "$state/$name/config" "$@" \
    >"$state/$name/log" 2>&1 </dev/null &
  echo $! > "$state/$name/pid"
}

port_free() {  # ip port: nothing listens there yet
  ! (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

alive() {  # name: our agent's process is running
  [ -f "$state/$1/pid" ] && kill -0 "$(cat "$state/$1/pid")" 2>/dev/null
}

wait_http() {  # addr [name of our agent that must stay alive]
  for _ in $(seq 1 100); do
    if [ -n "${2:-}" ] && ! alive "$2"; then
      log "our agent $2 exited; its log says:"; tail -5 "$state/$2/log" >&2; return 1
    fi
    if [ -n "$(curl -fsS --max-time 1 "http://$1/v1/status/leader" 2>/dev/null | tr -d '"')" ]; then return 0; fi
    sleep 0.2
  done
  log "no leader at $1 after 20 s"; return 1
}

monitor_conf() {  # extra json members
  cat <<JSON
{"node_name": "monitor", "bind_addr": "127.0.0.1", "client_addr": "127.0.0.1",
 "data_dir": "$state/monitor/data", "enable_local_script_checks": true,
 "disable_update_check": true, "log_level": "INFO", "ports": {"dns": -1}, "retry_interval": "1s" $1}
JSON
}

up() {
  local mode=${1:-dev}
  mkdir -p "$state" "$confd"
  if ! alive monitor && ! port_free 127.0.0.1 8500; then
    log "127.0.0.1:8500 is already taken by another Consul (stop it first: make demo-down there)"
    return 1
  fi
  case $mode in
    dev)
      write_conf monitor "$(monitor_conf ', "server": true, "bootstrap_expect": 1, "performance": {"raft_multiplier": 1}')"
      start monitor -config-dir "$confd"
      ;;
    cluster)
      for i in 2 3 4; do
        write_conf "server$i" "{\"node_name\": \"server$i\", \"server\": true, \"bootstrap_expect\": 3,
          \"bind_addr\": \"127.0.0.$i\", \"client_addr\": \"127.0.0.$i\", \"data_dir\": \"$state/server$i/data\",
          \"retry_join\": [\"127.0.0.2\", \"127.0.0.3\", \"127.0.0.4\"], \"retry_interval\": \"1s\",
          \"performance\": {\"raft_multiplier\": 1},
          \"disable_update_check\": true, \"ports\": {\"dns\": -1}}"
        start "server$i"
      done
      write_conf monitor "$(monitor_conf ', "retry_join": ["127.0.0.2", "127.0.0.3", "127.0.0.4"]')"
      start monitor -config-dir "$confd"
      ;;
    *) log "unknown mode $mode (dev|cluster)"; exit 2 ;;
  esac
  echo "$mode" > "$state/mode"
  wait_http 127.0.0.1:8500 monitor
  log "up ($mode): http://127.0.0.1:8500"
}

down() {
  for p in "$state"/*/pid; do
    [ -f "$p" ] || continue
    local pid; pid=$(cat "$p")
    if kill -0 "$pid" 2>/dev/null; then
      kill -INT "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$p"
  done
  rm -rf "$state"
  log "down"
}

case ${1:-} in
  up) up "${2:-dev}" ;;
  down) down ;;
  reload) consul reload -http-addr=127.0.0.1:8500 ;;
  status) consul members -http-addr=127.0.0.1:8500 ;;
  *) echo "usage: $0 up [dev|cluster] | down | reload | status" >&2; exit 2 ;;
esac
