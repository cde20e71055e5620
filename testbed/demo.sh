#!/usr/bin/env bash
# make demo: the testbed up, Consul running, the demo web service at 3 replicas.
#   testbed/demo.sh        bring it all up and show it
#   testbed/demo.sh down   remove the demo containers and stop Consul
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$root/.venv/bin:$PATH"
compose=(docker compose -p medicdemo -f testbed/demo/compose.yml)
say() { printf '\n== %s\n' "$*"; }

if [ "${1:-}" = down ]; then
  "${compose[@]}" down --remove-orphans -t 1 || true
  bash testbed/consul.sh down || true
  exit 0
fi

say "Consul (dev agent, loopback only)"
bash testbed/consul.sh up dev
say "demo service: 3 replicas of medic-demo on random 127.0.0.1 ports"
"${compose[@]}" up -d --scale web=3 web
"${compose[@]}" ps
say "each replica answers"
for c in $("${compose[@]}" ps -q web); do
  port=$(docker port "$c" 80/tcp | head -1 | sed 's/.*://')
  printf '%s  127.0.0.1:%s  %s\n' "${c:0:12}" "$port" "$(curl -fsS --max-time 2 "http://127.0.0.1:$port/cgi-bin/health")"
done
say "Consul answers"
consul members -http-addr=127.0.0.1:8500
echo
echo "Stop with: make demo-down"
