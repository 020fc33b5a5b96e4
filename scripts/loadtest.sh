#!/usr/bin/env bash
# Runs a release server and `loadgen` against it on this machine and reports, next to
# loadgen's latency table, the server's CPU (% of one core, per thread) and RSS per player
# measured over the steady-state window (after ramp-up, before the end).
#
#   scripts/loadtest.sh                               # 1000 bots, 60 s
#   PLAYERS=500 DURATION=30 scripts/loadtest.sh
#   SERVER_ARGS="--snapshot-rate 30" LOADGEN_ARGS="--input-hz 30" scripts/loadtest.sh
#   STORE=cql scripts/loadtest.sh                     # the CQL backend on a local Cassandra node
#
# Only 127.0.0.1 is used. Ports: UDP ${PORT:-24433}, metrics ${METRICS_PORT:-29464}.
# The server's data directory is a fresh temporary directory, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

players="${PLAYERS:-1000}"
duration="${DURATION:-60}"
ramp="${RAMP_UP:-10}"
port="${PORT:-24433}"
metrics_port="${METRICS_PORT:-29464}"
server_args="${SERVER_ARGS:-}"
loadgen_args="${LOADGEN_ARGS:-}"
report="${REPORT:-target/loadtest-report.json}"

if [ -z "${ZONEHOST_BIN:-}" ] || [ -z "${LOADGEN_BIN:-}" ]; then
    cargo build --release --locked -p zonehost -p zonehost-loadgen >&2
fi

# shellcheck source=scripts/lib/server.sh
. scripts/lib/server.sh
# STORE=cql: the CQL backend on a local Apache Cassandra node (scripts/cql-node.sh, started
# here on port ${CQL_PORT:-29342} and stopped at the end), or on SCYLLA_URI when set.
if [ "${STORE:-embedded}" = cql ]; then
    if [ -z "${SCYLLA_URI:-}" ]; then
        export CQL_PORT="${CQL_PORT:-29342}"
        SCYLLA_URI="$(scripts/cql-node.sh start)"
        trap 'cleanup_server; scripts/cql-node.sh stop' EXIT
    fi
    printf '[store.backend]\nkind = "scylla"\nuri = "%s"\nkeyspace = "zonehost_loadtest_%s"\nreplication_factor = 1\n' \
        "$SCYLLA_URI" "$(date +%s)" >"$data/cql.toml"
    "${ZONEHOST_BIN:-target/release/zonehost}" store migrate --config "$data/cql.toml" --data-dir "$data"
    server_args="--config $data/cql.toml $server_args"
fi
# shellcheck disable=SC2086
start_server $server_args

clk_tck="$(getconf CLK_TCK)"
# utime+stime of the process and of each thread, in clock ticks: "name ticks" lines.
cpu_snapshot() {
    local pid="$1"
    awk '{print "total", $14 + $15}' "/proc/$pid/stat"
    for t in /proc/"$pid"/task/*; do
        # comm may contain spaces in general, not for our threads (zh-net, zh-sim-N, ...).
        awk '{gsub(/[()]/, "", $2); print $2, $14 + $15}' "$t/stat"
    done
}

# shellcheck disable=SC2086
"${LOADGEN_BIN:-target/release/loadgen}" --players "$players" --duration "${duration}s" --ramp-up "${ramp}s" \
    --server "127.0.0.1:$port" --cert "$data/cert.der" --token-key "$data/dev-signing.key" \
    --report "$report" $loadgen_args &
loadgen_pid=$!

# Steady-state window: from ramp-up + 5 s to 5 s before the end.
window_start=$((ramp + 5))
window=$((duration - ramp - 10))
if [ "$window" -lt 5 ]; then window=5; fi
sleep "$window_start"
before="$(cpu_snapshot "$server_pid")"
lg_before="$(awk '{print $14 + $15}' "/proc/$loadgen_pid/stat")"
t0=$(date +%s.%N)
sleep "$window"
after="$(cpu_snapshot "$server_pid")"
lg_after="$(awk '{print $14 + $15}' "/proc/$loadgen_pid/stat")"
t1=$(date +%s.%N)
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$server_pid/status")
# The anonymous part grows with players; the file-backed part is mostly the binary's text
# (a fixed cost, shared and reclaimable).
anon_kb=$(awk '/RssAnon/ {print $2}' "/proc/$server_pid/status")
file_kb=$(awk '/RssFile/ {print $2}' "/proc/$server_pid/status")
players_now=$(curl -fs "http://127.0.0.1:$metrics_port/metrics" | awk '$1 == "zonehost_sessions_active" {print $2}')
status=0
wait "$loadgen_pid" || status=$?

echo
echo "server, steady state over $(printf '%.1f' "$(echo "$t1 - $t0" | bc)") s (% of one core):"
join <(echo "$before" | sort) <(echo "$after" | sort) | awk -v hz="$clk_tck" -v dt="$(echo "$t1 - $t0" | bc)" \
    '{ d = ($3 - $2) / hz / dt * 100; if (d >= 0.5 || $1 == "total") printf "  %-16s %6.1f%%\n", $1, d }' | sort -k2 -n -r
echo "loadgen, same window: $(echo "($lg_after - $lg_before) / $clk_tck / ($t1 - $t0) * 100" | bc -l | xargs printf '%.1f')% of one core"
echo "server RSS: $((rss_kb / 1024)) MiB with ${players_now:-?} players ($(( rss_kb / ${players_now:-1} )) KiB per player); anonymous $((anon_kb / 1024)) MiB ($(( anon_kb / ${players_now:-1} )) KiB per player), file-backed $((file_kb / 1024)) MiB"
metrics="$(curl -fs "http://127.0.0.1:$metrics_port/metrics" || true)"
ticks=$(echo "$metrics" | awk '$1 == "zonehost_ticks_total" {print $2}')
late=$(echo "$metrics" | awk '$1 == "zonehost_ticks_late_total" {print $2}')
skipped=$(echo "$metrics" | awk '$1 == "zonehost_ticks_skipped_total" {print $2}')
if [ -n "$ticks" ] && [ -n "$late" ]; then
    echo "server ticks (whole run): $ticks, late by more than one tick: $late ($(echo "100 * $late / $ticks" | bc -l | xargs printf '%.3f')%), skipped: ${skipped:-?}"
fi
# UDP packets of player connections and the estimated ACK-only ones, from the server's counters.
echo "$metrics" | awk '
    function dir(name) { d = name; sub(/.*direction="/, "", d); sub(/".*/, "", d); return d }
    $1 ~ /^zonehost_quic_packets_total\{/ { p[dir($1)] = $2 }
    $1 ~ /^zonehost_quic_ack_only_packets_total\{/ { a[dir($1)] = $2 }
    END {
        if (p["sent"] + p["received"] == 0) exit
        printf "server QUIC packets (whole run): sent %d (%.1f%% ACK-only), received %d (%.1f%% ACK-only)\n",
            p["sent"], 100 * a["sent"] / (p["sent"] > 0 ? p["sent"] : 1),
            p["received"], 100 * a["received"] / (p["received"] > 0 ? p["received"] : 1)
    }'
# Store operation latency from the server's histogram: the bucket bound holding p50 / p99.
for op in item items save load; do
    echo "$metrics" | awk -v op="$op" '
        $1 ~ "^zonehost_store_op_seconds_bucket\\{" && $1 ~ "op=\"" op "\"" {
            le = $1; sub(/.*le="/, "", le); sub(/".*/, "", le); n++; bound[n] = le; count[n] = $2 }
        END {
            if (n == 0 || count[n] == 0) exit
            total = count[n]; p50 = ""; p99 = ""
            for (i = 1; i <= n; i++) {
                if (p50 == "" && count[i] >= total * 0.50) p50 = bound[i]
                if (p99 == "" && count[i] >= total * 0.99) p99 = bound[i]
            }
            printf "store op %-5s %8d ops: p50 <= %s s, p99 <= %s s (histogram bucket bounds)\n", op, total, p50, p99
        }'
done
echo "JSON report: $report"
exit "$status"
