#!/usr/bin/env bash
# Three `zonehost serve` processes on one CQL store (the Apache Cassandra node of
# scripts/cql-node.sh, or SCYLLA_URI), real play from loadgen spread over them, then faults:
#
#   1. t = KILL_AT s:  kill -9 server b (its players' leases expire after LEASE_TTL s; bots
#                      that reconnect are served by a or c);
#   2. t = DRAIN_AT s: SIGTERM server c (drain by migration: its players are redirected to a);
#   3. the run ends, a drains, and `zonehost store check` runs against the keyspace.
#
#   scripts/cql-cluster-drill.sh                      # 300 bots, 100 s, kill at 30 s, drain at 80 s
#   PLAYERS=100 DURATION=60 KILL_AT=15 DRAIN_AT=50 LEASE_TTL=15 scripts/cql-cluster-drill.sh
#
# Prints players per server before and after each fault, loadgen's table and failures, and
# the store check and `zonehost store verify-ops` on the bots' log of confirmed item
# operations. Exit status: 0 when both pass and loadgen exits 0; 3 when
# the check finds faults; loadgen's status otherwise.
# Only 127.0.0.1 is used. Ports: UDP ${PORT:-33433}..+2, metrics ${METRICS_PORT:-33464}..+2,
# CQL ${CQL_PORT:-29142} when the script starts its own node. Bounded: every wait has a limit.
set -euo pipefail
cd "$(dirname "$0")/.."

players="${PLAYERS:-300}"
duration="${DURATION:-100}"
ramp="${RAMP_UP:-20}"
kill_at="${KILL_AT:-30}"
drain_at="${DRAIN_AT:-80}"
lease_ttl="${LEASE_TTL:-30}"
port="${PORT:-33433}"
metrics_port="${METRICS_PORT:-33464}"
loadgen_args="${LOADGEN_ARGS:---mix mover=30,fighter=25,looter=20,party=15,hopper=10 --spread-parties}"
report="${REPORT:-target/cql-cluster-drill-report.json}"
zonehost="${ZONEHOST_BIN:-target/release/zonehost}"
loadgen="${LOADGEN_BIN:-target/release/loadgen}"

if [ -z "${ZONEHOST_BIN:-}" ] || [ -z "${LOADGEN_BIN:-}" ]; then
    cargo build --release --locked -p zonehost -p zonehost-loadgen >&2
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/zonehost-cql-drill.XXXXXX")"
pids=("" "" "")
loadgen_pid=""
own_node=0
cleanup() {
    [ -n "$loadgen_pid" ] && kill "$loadgen_pid" 2>/dev/null || true
    for p in "${pids[@]}"; do
        [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        [ -n "$p" ] && timeout 20 tail --pid="$p" -f /dev/null 2>/dev/null || true
    done
    if [ "$own_node" = 1 ]; then CQL_PORT="${CQL_PORT:-29142}" scripts/cql-node.sh stop || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

if [ -z "${SCYLLA_URI:-}" ]; then
    own_node=1
    SCYLLA_URI="$(CQL_PORT="${CQL_PORT:-29142}" scripts/cql-node.sh start)"
fi
keyspace="zonehost_drill_$(date +%s)"
cat >"$work/cluster.toml" <<EOF
second_login = "take_over"

[store]
checkpoint_interval_secs = 5

[store.backend]
kind = "scylla"
uri = "$SCYLLA_URI"
keyspace = "$keyspace"
replication_factor = 1

[cluster]
enabled = true
player_lease_ttl_secs = $lease_ttl
load_report_interval_ms = 500

[cluster.peers]
a = "127.0.0.1:$port"
b = "127.0.0.1:$((port + 1))"
c = "127.0.0.1:$((port + 2))"
EOF
"$zonehost" store migrate --config "$work/cluster.toml" --data-dir "$work/data"

names=(a b c)
start_server() { # start_server INDEX
    local i="$1" _
    "$zonehost" serve --config "$work/cluster.toml" --data-dir "$work/data" --server-id "${names[$i]}" \
        --listen "127.0.0.1:$((port + i))" --metrics-listen "127.0.0.1:$((metrics_port + i))" \
        >"$work/server-${names[$i]}.log" 2>&1 &
    pids[$i]=$!
    for _ in $(seq 1 300); do
        curl -fs "http://127.0.0.1:$((metrics_port + i))/readyz" >/dev/null 2>&1 && return 0
        kill -0 "${pids[$i]}" 2>/dev/null || break
        sleep 0.1
    done
    tail -20 "$work/server-${names[$i]}.log" >&2
    echo "server ${names[$i]} did not become ready" >&2
    exit 1
}
# a first: it creates the dev certificate and keys that b and c load from the same data dir.
for i in 0 1 2; do start_server "$i"; done

per_server() { # prints "a=N b=N c=N" (- for a server that is down)
    local out="" i v
    for i in 0 1 2; do
        v=$(curl -fs --max-time 2 "http://127.0.0.1:$((metrics_port + i))/metrics" 2>/dev/null |
            awk '$1 == "zonehost_sessions_active" {print $2}') || true
        out+="${names[$i]}=${v:--} "
    done
    echo "$out"
}

t0=$SECONDS
"$loadgen" --players "$players" --duration "${duration}s" --ramp-up "${ramp}s" \
    --server "127.0.0.1:$port" --server "127.0.0.1:$((port + 1))" --server "127.0.0.1:$((port + 2))" \
    --cert "$work/data/cert.der" --token-key "$work/data/dev-signing.key" \
    --report "$report" --ops-log "$work/ops.jsonl" $loadgen_args >"$work/loadgen.out" 2>&1 &
loadgen_pid=$!

sleep_until() { local at="$1"; while [ $((SECONDS - t0)) -lt "$at" ]; do sleep 0.2; done; }
sleep_until "$kill_at"
echo "t=$((SECONDS - t0))s before kill -9 of b: $(per_server)"
kill -KILL "${pids[1]}"
pids[1]=""
sleep_until $((kill_at + lease_ttl + 5))
echo "t=$((SECONDS - t0))s ${lease_ttl}+5 s after the kill: $(per_server)"
sleep_until "$drain_at"
echo "t=$((SECONDS - t0))s before SIGTERM of c: $(per_server)"
drain_started=$SECONDS
kill -TERM "${pids[2]}"
drain_status=0
wait "${pids[2]}" || drain_status=$?
pids[2]=""
echo "t=$((SECONDS - t0))s c drained in $((SECONDS - drain_started)) s (exit $drain_status): $(per_server)"

status=0
wait "$loadgen_pid" || status=$?
loadgen_pid=""
cat "$work/loadgen.out"
kill -TERM "${pids[0]}"
wait "${pids[0]}" || true
pids[0]=""
echo
echo "zonehost store check:"
check_status=0
"$zonehost" store check --config "$work/cluster.toml" --data-dir "$work/data" || check_status=$?
echo "zonehost store verify-ops (the bots' confirmed item operations):"
verify_status=0
"$zonehost" store verify-ops --ops-log "$work/ops.jsonl" --config "$work/cluster.toml" \
    --data-dir "$work/data" || verify_status=$?
echo "JSON report: $report"
if [ "$check_status" -ne 0 ] || [ "$verify_status" -ne 0 ]; then exit 3; fi
exit "$status"
