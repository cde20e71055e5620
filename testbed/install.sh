#!/usr/bin/env bash
# Installs and starts what consul-medic's tests and demo need, on Debian 12 as root.
# Idempotent: each step checks first and does nothing when the part is already there.
#   consul 1.8.7       from the Debian 11 archive (not packaged in Debian 12)
#   docker.io          from Debian 12; dockerd started in the background if no engine answers
#   docker compose v2  from the Debian 13 docker-compose .deb, as a Docker CLI plugin
#   busybox-static     for the demo image (no registry is reachable)
#   nginx (+ stream module), haproxy, redis-server, redis-tools: medic-lb / medic-failover tests;
#                      installed with their services NOT started (tests run their own processes)
#   systemd, python3-venv  `systemd-analyze verify` of deploy/systemd; `make install` (tests/system/test_install.py)
#   prometheus 2.42, prometheus-node-exporter  docs/metrics.md: promtool checks the shipped rules, the
#                      metrics tests scrape medic; installed with their services NOT started
set -euo pipefail
log() { printf 'testbed: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (installs packages and starts dockerd)"
WORK=${MEDIC_APT_DIR:-/var/cache/consul-medic/apt}
APT_UPDATED=""

apt_update_once() {
  [ -n "$APT_UPDATED" ] && return
  log "apt-get update"
  apt-get update -qq
  APT_UPDATED=1
}

# Download one package from another Debian suite without touching the system's apt state.
fetch_deb() {  # suite package -> path of the .deb
  local suite=$1 pkg=$2
  mkdir -p "$WORK/lists/partial" "$WORK/archives/partial" "$WORK/debs"
  printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian %s main\n' \
    "$suite" > "$WORK/sources-$suite.list"
  local opts=(-o "Dir::Etc::SourceList=$WORK/sources-$suite.list" -o Dir::Etc::SourceParts=/dev/null
              -o "Dir::State::Lists=$WORK/lists/$suite" -o "Dir::Cache::Archives=$WORK/archives"
              -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
  mkdir -p "$WORK/lists/$suite/partial"
  apt-get "${opts[@]}" update -qq >&2
  (cd "$WORK/debs" && rm -f "${pkg}"_*.deb && apt-get "${opts[@]}" download "$pkg/$suite" >&2)
  ls "$WORK/debs/${pkg}"_*.deb
}

install_consul() {
  if command -v consul >/dev/null && consul version 2>/dev/null | grep -q '^Consul v1\.\([89]\|[1-9][0-9]\)'; then
    log "consul present: $(consul version | head -1)"; return
  fi
  log "installing consul 1.8.7 from Debian 11 (bullseye)"
  local deb x; deb=$(fetch_deb bullseye consul); x=$(mktemp -d)
  dpkg -x "$deb" "$x"
  install -m 0755 "$x/usr/bin/consul" /usr/local/bin/consul
  rm -rf "$x"
  consul version | head -1 >&2
}

install_docker() {
  if command -v dockerd >/dev/null && command -v containerd >/dev/null && command -v runc >/dev/null; then
    log "docker engine present: $(dockerd --version)"; return
  fi
  apt_update_once
  log "installing docker.io from Debian 12"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
}

install_compose() {
  if docker compose version >/dev/null 2>&1; then
    log "compose present: $(docker compose version)"; return
  fi
  log "installing docker compose v2 from Debian 13 (trixie) as a CLI plugin"
  local deb x; deb=$(fetch_deb trixie docker-compose); x=$(mktemp -d)
  dpkg -x "$deb" "$x"
  mkdir -p /usr/local/lib/docker/cli-plugins
  install -m 0755 "$x/usr/libexec/docker/cli-plugins/docker-compose" /usr/local/lib/docker/cli-plugins/docker-compose
  rm -rf "$x"
  docker compose version >&2
}

install_busybox() {
  if dpkg -s busybox-static >/dev/null 2>&1; then log "busybox-static present"; return; fi
  apt_update_once
  log "installing busybox-static"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null
}

install_lb_parts() {  # medic-lb and medic-failover: real nginx 1.22, HAProxy 2.6, Redis 7
  local pkgs=(nginx libnginx-mod-stream haproxy redis-server redis-tools) missing=() p
  for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} = 0 ]; then log "nginx, haproxy, redis present"; return; fi
  apt_update_once
  log "installing ${missing[*]} (their system services are not started)"
  local own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 0755 /usr/sbin/policy-rc.d; own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null || {
    [ -n "$own_policy" ] && rm -f /usr/sbin/policy-rc.d; die "apt-get install ${missing[*]} failed"; }
  [ -n "$own_policy" ] && rm -f /usr/sbin/policy-rc.d
  return 0
}

install_prometheus() {  # docs/metrics.md: promtool, a real Prometheus and node_exporter in the tests
  local pkgs=(prometheus prometheus-node-exporter) missing=() p
  for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} = 0 ]; then log "prometheus, node_exporter present"; return; fi
  apt_update_once
  log "installing ${missing[*]} (their system services are not started)"
  local own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 0755 /usr/sbin/policy-rc.d; own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || {
    [ -n "$own_policy" ] && rm -f /usr/sbin/policy-rc.d; die "apt-get install ${missing[*]} failed"; }
  [ -n "$own_policy" ] && rm -f /usr/sbin/policy-rc.d
  return 0
}

install_site_tools() {  # site: the unit and install tests (tests/system/test_install.py)
  local missing=()
  command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
  if [ ${#missing[@]} = 0 ]; then log "systemd-analyze and python3 venv present"; return; fi
  apt_update_once
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

# The default bridge is docker0. A second engine started with --bridge=none, or a hand-made
# cleanup, can delete it while the first engine runs; every `docker run` on the default network
# then fails ("could not find bridge docker0"). Put it back with the address the engine expects.
ensure_docker0() {
  local name; name=$(docker network inspect bridge -f '{{index .Options "com.docker.network.bridge.name"}}' 2>/dev/null)
  [ "$name" = docker0 ] || return 0
  ip link show docker0 >/dev/null 2>&1 && return 0
  local subnet gw
  subnet=$(docker network inspect bridge -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}')
  gw=$(docker network inspect bridge -f '{{range .IPAM.Config}}{{.Gateway}}{{end}}')
  [ -n "$gw" ] || gw="${subnet%.*/*}.1"
  log "docker0 is missing while the engine runs: re-creating it ($gw/${subnet#*/})"
  ip link add docker0 type bridge && ip addr add "$gw/${subnet#*/}" dev docker0 && ip link set docker0 up
}

start_dockerd() {
  if engine_answers; then log "docker engine answers"; ensure_docker0; return; fi
  if pgrep -x dockerd >/dev/null; then
    log "dockerd runs but does not answer yet; waiting"
  else
    # A killed engine leaves pid files and sockets behind; the pid may even belong to
    # another process by now. Nothing of ours runs, so they are all stale.
    log "starting dockerd (clearing stale pid files and sockets)"
    rm -f /var/run/docker.pid /var/run/docker.sock \
          /var/run/docker/containerd/containerd.pid /var/run/docker/containerd/containerd.sock \
          /var/run/docker/containerd/containerd-debug.sock
    if ! pgrep -x containerd >/dev/null; then rm -f /run/containerd/containerd.sock; fi
    mkdir -p /var/log/consul-medic
    nohup setsid dockerd --host unix:///var/run/docker.sock \
      >>/var/log/consul-medic/dockerd.log 2>&1 </dev/null &
  fi
  for _ in $(seq 1 120); do
    if engine_answers; then log "docker engine answers"; return; fi
    sleep 0.5
  done
  tail -20 /var/log/consul-medic/dockerd.log >&2 || true
  die "dockerd did not answer within 60 s (log: /var/log/consul-medic/dockerd.log)"
}

install_consul
install_docker
install_busybox
install_site_tools
start_dockerd
install_compose
install_lb_parts
install_prometheus
"$(dirname "$0")/build-image.sh"
"$(dirname "$0")/build-redis-image.sh"
log "ready"
