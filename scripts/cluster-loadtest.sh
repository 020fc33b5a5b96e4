#!/usr/bin/env bash
# Runs loadgen against a cluster of three servers on this machine and checks the store
# afterwards. Three server processes cannot share the embedded store file, so the servers
# are hosted in one process (`zonehost serve --dev-cluster 3`: three servers, three UDP
# ports, one shared embedded store, [cluster] on, each listing the others as peers); bots
# are spread over the three addresses, each party group on its leader's server.
#
#   scripts/cluster-loadtest.sh                         # 200 bots, 30 s, a mixed game
#   PLAYERS=500 DURATION=60 scripts/cluster-loadtest.sh
#   LOADGEN_ARGS="--mix mover=100" scripts/cluster-loadtest.sh
#   LOADGEN_ARGS="--mix mover=30,fighter=25,looter=20,party=15,hopper=10 --spread-parties" \
#       scripts/cluster-loadtest.sh                   # party members start away from their leader
#   CONNECT_TO=1 SERVER_ARGS="--config low-thresholds.toml" scripts/cluster-loadtest.sh
#                                                     # every bot logs in on the first server: placement
#                                                     # by load has to spread them
#
# Only 127.0.0.1 is used. Ports: UDP ${PORT:-32433} and the next two, metrics
# ${METRICS_PORT:-32464} and the next two. The data directory is a fresh temporary one,
# removed at the end. Exit status: loadgen's, or 3 when `zonehost store check` finds
# anomalies.
set -euo pipefail
cd "$(dirname "$0")/.."

players="${PLAYERS:-200}"
duration="${DURATION:-30}"
ramp="${RAMP_UP:-5}"
port="${PORT:-32433}"
metrics_port="${METRICS_PORT:-32464}"
servers="${SERVERS:-3}"
connect_to="${CONNECT_TO:-$servers}"   # how many of the servers loadgen is given
server_args="${SERVER_ARGS:-}"
loadgen_args="${LOADGEN_ARGS:---mix mover=30,fighter=25,looter=20,party=15,hopper=10}"
report="${REPORT:-target/cluster-loadtest-report.json}"

if [ -z "${ZONEHOST_BIN:-}" ] || [ -z "${LOADGEN_BIN:-}" ]; then
    cargo build --release --locked -p zonehost -p zonehost-loadgen >&2
fi

# shellcheck source=scripts/lib/server.sh
. scripts/lib/server.sh
# shellcheck disable=SC2086
start_server --dev-cluster "$servers" $server_args
for i in $(seq 1 $((servers - 1))); do
    for _ in $(seq 1 100); do
        curl -fs "http://127.0.0.1:$((metrics_port + i))/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
done

server_flags=()
for i in $(seq 0 $((connect_to - 1))); do server_flags+=(--server "127.0.0.1:$((port + i))"); done

# shellcheck disable=SC2086
"${LOADGEN_BIN:-target/release/loadgen}" --players "$players" --duration "${duration}s" --ramp-up "${ramp}s" \
    "${server_flags[@]}" --cert "$data/cert.der" --token-key "$data/dev-signing.key" \
    --report "$report" $loadgen_args &
loadgen_pid=$!

# Players per server in the middle of the steady state. (One process, one metrics
# recorder: each endpoint publishes its own server's gauges when scraped, but counters
# recorded at the event, e.g. zonehost_cluster_login_redirects_total, are process-wide.)
sleep $(( ramp + (duration - ramp) / 2 ))
echo "players per server (mid-run):"
for i in $(seq 0 $((servers - 1))); do
    m="$(curl -fs "http://127.0.0.1:$((metrics_port + i))/metrics" || true)"
    active=$(echo "$m" | awk '$1 == "zonehost_sessions_active" {print $2}')
    echo "  server $i (127.0.0.1:$((port + i))): ${active:-?} active sessions"
done
m="$(curl -fs "http://127.0.0.1:$metrics_port/metrics" || true)"
redirected_by_load="$(echo "$m" | awk '$1 == "zonehost_cluster_login_redirects_total" {print $2}')"
echo "logins redirected by load (all servers): ${redirected_by_load:-0}"
echo "redirected at login by server 0 (owner or load): $(echo "$m" | awk '$1 ~ /^zonehost_disconnects_total/ && $1 ~ /cause="redirected"/ {print $2}')"
status=0
wait "$loadgen_pid" || status=$?
loadgen_pid=""

# Party convergence: members that logged in away from their party's leader were saved,
# released and redirected to the leader's server (--spread-parties makes them start away).
# The dev cluster's servers share one metrics recorder and a counter keeps the largest value
# any of them published, so this is the busiest server's count, not the sum; loadgen's
# "logins" beyond one per bot count every move (a Redirect after Welcome, or a churn).
m="$(curl -fs "http://127.0.0.1:$metrics_port/metrics" || true)"
handoffs=$(echo "$m" | awk '$1 == "zonehost_party_handoffs_total" {print $2}')
echo "party members handed to their leader's server (largest count of one server): ${handoffs:-0}"
# New dungeon instances placed by load (recorded at the event: process-wide, all servers).
placed=$(echo "$m" | awk '$1 ~ /^zonehost_cluster_instance_placements_total/ && $1 ~ /where="peer"/ {print $2}')
kept=$(echo "$m" | awk '$1 ~ /^zonehost_cluster_instance_placements_total/ && $1 ~ /where="local"/ {print $2}')
echo "new dungeon instances placed by load (all servers): ${placed:-0} on a peer, ${kept:-0} local"

# Stop the servers (one process), then check the store they shared.
kill -TERM "$server_pid" 2>/dev/null || true
wait "$server_pid" 2>/dev/null || true
server_pid=""
echo
echo "zonehost store check:"
check_status=0
"${ZONEHOST_BIN:-target/release/zonehost}" store check --data-dir "$data" || check_status=$?
echo "JSON report: $report"
if [ "$check_status" -ne 0 ]; then exit 3; fi
exit "$status"
