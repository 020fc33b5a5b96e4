#!/usr/bin/env bash
# The database failing under play: one `zonehost serve` on the CQL backend (the Apache
# Cassandra node of scripts/cql-node.sh, started here), loadgen playing, and the CQL node
# killed (kill -9) at OUTAGE_AT s and started again OUTAGE_SECONDS later.
#
#   scripts/cql-outage-drill.sh                     # 300 bots, 100 s, a 10 s outage at 40 s
#   PLAYERS=100 DURATION=60 RAMP_UP=10 OUTAGE_AT=20 scripts/cql-outage-drill.sh
#
# The node is started again OUTAGE_SECONDS after the kill; Cassandra then replays its commit
# log before CQL answers (10-40 s here), so the store is back some seconds after that: the
# run must be long enough to see the catch-up (the script reports when the store's errors
# stopped growing and its operations resumed).
#
# While the node is down it also starts a second server against it and expects it to exit
# non-zero naming the CQL address. It prints the store metrics (errors by op and kind, ops)
# before, during and after the outage, loadgen's table (actions by kind, errors, failed
# bots) and `zonehost store check` after the run.
# Exit status: 0 when the check passes, no bot failed and the second server refused to
# start; 1 otherwise.
# Only 127.0.0.1 is used. Ports: UDP ${PORT:-34433}, metrics ${METRICS_PORT:-34464}, CQL
# ${CQL_PORT:-29242}. Bounded: every wait has a limit.
set -euo pipefail
cd "$(dirname "$0")/.."

players="${PLAYERS:-300}"
duration="${DURATION:-100}"
ramp="${RAMP_UP:-30}"
outage_at="${OUTAGE_AT:-40}"
outage_seconds="${OUTAGE_SECONDS:-10}"
port="${PORT:-34433}"
metrics_port="${METRICS_PORT:-34464}"
export CQL_PORT="${CQL_PORT:-29242}"
loadgen_args="${LOADGEN_ARGS:---mix mover=30,fighter=25,looter=30,hopper=15}"
report="${REPORT:-target/cql-outage-drill-report.json}"
zonehost="${ZONEHOST_BIN:-target/release/zonehost}"
loadgen="${LOADGEN_BIN:-target/release/loadgen}"

if [ -z "${ZONEHOST_BIN:-}" ] || [ -z "${LOADGEN_BIN:-}" ]; then
    cargo build --release --locked -p zonehost -p zonehost-loadgen >&2
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/zonehost-cql-outage.XXXXXX")"
server_pid=""
loadgen_pid=""
cleanup() {
    [ -n "$loadgen_pid" ] && kill "$loadgen_pid" 2>/dev/null || true
    if [ -n "$server_pid" ]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        timeout 20 tail --pid="$server_pid" -f /dev/null 2>/dev/null || true
    fi
    scripts/cql-node.sh stop || true
    rm -rf "$work"
}
trap cleanup EXIT

uri="$(scripts/cql-node.sh start)"
cat >"$work/server.toml" <<EOF
[store]
checkpoint_interval_secs = 5

[store.backend]
kind = "scylla"
uri = "$uri"
keyspace = "zonehost_outage"
replication_factor = 1
EOF
"$zonehost" store migrate --config "$work/server.toml" --data-dir "$work/data"
"$zonehost" serve --config "$work/server.toml" --data-dir "$work/data" \
    --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$metrics_port" --log-format json >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 300); do
    curl -fs "http://127.0.0.1:$metrics_port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done

store_metrics() { # the store counters, one line
    curl -fs --max-time 2 "http://127.0.0.1:$metrics_port/metrics" 2>/dev/null | awk '
        $1 ~ /^zonehost_store_errors_total/ { errors += $2; split($1, a, "[{}]"); by[a[2]] += $2 }
        $1 ~ /^zonehost_store_op_seconds_count/ { ops += $2 }
        $1 == "zonehost_sessions_active" { sessions = $2 }
        END {
            printf "sessions=%d store_ops=%d store_errors=%d", sessions, ops, errors
            for (k in by) printf " [%s]=%d", k, by[k]
            printf "\n"
        }'
}

t0=$SECONDS
"$loadgen" --players "$players" --duration "${duration}s" --ramp-up "${ramp}s" \
    --server "127.0.0.1:$port" --cert "$work/data/cert.der" --token-key "$work/data/dev-signing.key" \
    --report "$report" --ops-log "$work/ops.jsonl" $loadgen_args >"$work/loadgen.out" 2>&1 &
loadgen_pid=$!
sleep_until() { local at="$1"; while [ $((SECONDS - t0)) -lt "$at" ]; do sleep 0.2; done; }

sleep_until "$outage_at"
echo "t=$((SECONDS - t0))s before the outage: $(store_metrics)"
scripts/cql-node.sh kill
down_at=$SECONDS

# A server started while the node is down must refuse to start, naming the address.
refused=0
second_status=0
timeout 60 "$zonehost" serve --config "$work/server.toml" --data-dir "$work/data-second" \
    --listen "127.0.0.1:$((port + 1))" --metrics-listen off >"$work/second.log" 2>&1 || second_status=$?
if [ "$second_status" -ne 0 ] && [ "$second_status" -ne 124 ] && grep -q "$uri" "$work/second.log"; then
    refused=1
    echo "a server started during the outage exited $second_status: $(grep -m1 -o "Error:.*" "$work/second.log" || tail -1 "$work/second.log")"
else
    echo "FAIL: a server started during the outage did not refuse with the address (exit $second_status):"
    tail -5 "$work/second.log"
fi

while [ $((SECONDS - down_at)) -lt "$outage_seconds" ]; do sleep 0.2; done
echo "t=$((SECONDS - t0))s end of the outage, node starting: $(store_metrics)"
scripts/cql-node.sh restart >/dev/null
up_at=$SECONDS
echo "t=$((SECONDS - t0))s CQL answers again ($((up_at - down_at)) s after the kill): $(store_metrics)"
# Caught up: no new store errors over 2 s while store operations go on.
caught_up=""
prev_errors=-1
prev_ops=-1
for _ in $(seq 1 60); do
    line=$(store_metrics)
    errors=$(echo "$line" | sed -n 's/.*store_errors=\([0-9]*\).*/\1/p')
    ops=$(echo "$line" | sed -n 's/.*store_ops=\([0-9]*\).*/\1/p')
    if [ "$errors" = "$prev_errors" ] && [ "${ops:-0}" -gt "$prev_ops" ]; then
        caught_up=$((SECONDS - up_at))
        break
    fi
    prev_errors="$errors"
    prev_ops="${ops:-0}"
    sleep 2
done
echo "t=$((SECONDS - t0))s store caught up ${caught_up:-(not within 120 s)} s after CQL answered: $(store_metrics)"

status=0
wait "$loadgen_pid" || status=$?
loadgen_pid=""
cat "$work/loadgen.out"
echo "after the run: $(store_metrics)"
kill -TERM "$server_pid"
wait "$server_pid" || true
server_pid=""
echo "server log: $(grep -c '"level":"WARN"' "$work/server.log" || true) warnings, $(grep -c '"level":"ERROR"' "$work/server.log" || true) errors"
echo
echo "zonehost store check:"
check_status=0
"$zonehost" store check --config "$work/server.toml" --data-dir "$work/data" || check_status=$?
echo "zonehost store verify-ops (the bots' confirmed item operations):"
verify_status=0
"$zonehost" store verify-ops --ops-log "$work/ops.jsonl" --config "$work/server.toml" \
    --data-dir "$work/data" || verify_status=$?
echo "JSON report: $report"
failed=$(sed -n 's/.*"failed": *\([0-9]*\).*/\1/p' "$report" | head -1)
echo "failed bots: ${failed:-?}, loadgen exit $status, store check exit $check_status, verify-ops exit $verify_status, second server refused: $refused"
[ "$check_status" -eq 0 ] && [ "$verify_status" -eq 0 ] && [ "${failed:-1}" = 0 ] && [ "$refused" = 1 ]
