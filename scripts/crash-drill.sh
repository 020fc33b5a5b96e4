#!/usr/bin/env bash
# Crash drill (issue 18): bots in real play against one server on 127.0.0.1, the server
# killed (`kill -9`, or SIGTERM with SIGNAL=TERM for a drain) KILL_AT seconds in, the same
# server restarted on the same data directory and port RESTART_AFTER seconds later; the
# bots reconnect (resume, else a fresh login). At the end the server is drained and
# `zonehost store check` must exit 0. Prints loadgen's recovery figures (disconnections,
# reconnections, time to recover: loss → first snapshot after it) and exits non-zero when
# a bot failed, the check failed, or the bots' p99 return is later than MAX_RECOVER_P99_MS
# after the restart. No item operation the server confirmed may be lost: the store check
# verifies every item is owned exactly once, and `zonehost store verify-ops` checks the
# bots' log of confirmed operations (loadgen --ops-log) against the store.
#
#   scripts/crash-drill.sh                              # 300 bots, 45 s, kill -9 at 25 s
#   PLAYERS=20 DURATION=15 KILL_AT=6 scripts/crash-drill.sh    # the short form (< 60 s)
#   SIGNAL=TERM scripts/crash-drill.sh                   # drain + restart
#   PROFILE=debug scripts/crash-drill.sh                 # debug binaries (no release build)
#
# Only 127.0.0.1; every wait is bounded. Port UDP ${PORT:-25433}.
#
# Measured 2026-12-07 03:14-03:20 UTC (release, 300 bots of real play, server and bots on
# one shared 2-core machine; docs/performance.md):
#   kill -9 at 25 s, restart 2 s later: 300/300 back, 0 failed; time to recover p50 72 ms,
#   p99 1161 ms after the restart; store check exit 0; verify-ops: 756 records, 0 lost.
#   SIGTERM drain, restart 2 s after it exited: 300/300 back, 0 failed; p99 back in play
#   1357 ms after the restart; store check exit 0; verify-ops: 833 records, 0 lost.
set -euo pipefail
cd "$(dirname "$0")/.."

players="${PLAYERS:-300}"
duration="${DURATION:-45}"
ramp="${RAMP_UP:-5}"
kill_at="${KILL_AT:-25}"
restart_after="${RESTART_AFTER:-2}"
signal="${SIGNAL:-KILL}"
port="${PORT:-25433}"
profile="${PROFILE:-release}"
max_p99_ms="${MAX_RECOVER_P99_MS:-3000}"
deadline="${RECOVER_DEADLINE:-20s}"
report="${REPORT:-target/crash-drill-report.json}"
# Real play: fights (potions used), loot picked up and dropped, parties trading, churn.
mix="${MIX:-fighter=30,looter=30,party=25,churner=10,mover=5}"
trade_every="${TRADE_EVERY:-10s}"

if [ "$profile" = release ]; then
    cargo build --release --locked -p zonehost -p zonehost-loadgen >&2
    bin=target/release
else
    cargo build --locked -p zonehost -p zonehost-loadgen >&2
    bin=target/debug
fi

data="$(mktemp -d)"
server_pid=""
loadgen_pid=""
cleanup() {
    if [ -n "$loadgen_pid" ]; then kill "$loadgen_pid" 2>/dev/null || true; fi
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -KILL "$server_pid" 2>/dev/null || true
    fi
    cp "$data/server.log" "${report%.json}-server.log" 2>/dev/null || true
    rm -rf "$data"
}
trap cleanup EXIT

# After a drain the bots may come back half a second later (the restart takes longer).
printf 'reconnect_after_ms = 500\n' >"$data/drill.toml"
serve_args=(serve --config "$data/drill.toml" --data-dir "$data" --listen "127.0.0.1:$port"
    --metrics-listen off)
start_server() {
    "$bin/zonehost" "${serve_args[@]}" >>"$data/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 100); do
        grep -q "zonehost listening" "$data/server.log" 2>/dev/null && break
        sleep 0.1
    done
    kill -0 "$server_pid" 2>/dev/null || { cat "$data/server.log" >&2; exit 1; }
}
start_server
started=$(date +%s.%N)

"$bin/loadgen" --players "$players" --duration "${duration}s" --ramp-up "${ramp}s" \
    --server "127.0.0.1:$port" --cert "$data/cert.der" --token-key "$data/dev-signing.key" \
    --mix "$mix" --party-trade-every "$trade_every" \
    --recover-deadline "$deadline" --report "$report" --ops-log "$data/ops.jsonl" \
    ${LOADGEN_ARGS:-} &
loadgen_pid=$!

sleep "$kill_at"
echo "[crash-drill] kill -$signal the server at ${kill_at}s" >&2
killed=$(date +%s.%N)
kill "-$signal" "$server_pid"
# A drain ends by itself (bounded by its drain timeout); a kill at once.
for _ in $(seq 1 150); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
wait "$server_pid" 2>/dev/null || true
sleep "$restart_after"
start_server
restarted=$(date +%s.%N)
echo "[crash-drill] restarted $(echo "$restarted - $started" | bc) s after the start" >&2

status=0
wait "$loadgen_pid" || status=$?
loadgen_pid=""
kill -TERM "$server_pid"
for _ in $(seq 1 150); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
wait "$server_pid" 2>/dev/null || true
server_pid=""

check=0
"$bin/zonehost" store check --data-dir "$data" >&2 || check=$?
echo "[crash-drill] store check exit $check" >&2
verify=0
"$bin/zonehost" store verify-ops --ops-log "$data/ops.jsonl" --data-dir "$data" >&2 || verify=$?
echo "[crash-drill] store verify-ops exit $verify" >&2

# A drained server's clients notice the loss at the drain, a killed one's only at the
# restart (its stateless reset): the time after the restart is the time to recover less
# the downtime for a drain, the time to recover itself for a kill.
if [ "$signal" = KILL ]; then offset_ms=0; else offset_ms=$(echo "($restarted - $killed) * 1000" | bc); fi
python3 - "$report" "$max_p99_ms" "$check" "$status" "$offset_ms" "$verify" <<'EOF'
import json, sys
report, max_p99_ms, check, status = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
offset_ms, verify = float(sys.argv[5]), int(sys.argv[6])
r = json.load(open(report))
rc = r.get("recovery", {})
ttr = r.get("latency", {}).get("recover", {})
p = lambda k: ttr.get(k, 0) / 1000.0
bots = r["bots"]
print(f"[crash-drill] bots: {bots['planned']} planned, {bots['connected']} connected, {bots['failed']} failed")
print(f"[crash-drill] disconnections {rc.get('disconnections', 0)}, resumed {rc.get('resumed', 0)}, "
      f"rejoined {rc.get('rejoined', 0)}, attempts {rc.get('attempts', 0)}")
print(f"[crash-drill] time to recover (loss -> first snapshot), ms: p50 {p('p50_us'):.0f} "
      f"p90 {p('p90_us'):.0f} p99 {p('p99_us'):.0f} max {p('max_us'):.0f} (n={ttr.get('count', 0)})")
after_restart = max(0.0, p("p99_us") - offset_ms)
print(f"[crash-drill] p99 back in play {after_restart:.0f} ms after the restart (limit {max_p99_ms:.0f} ms)")
print(f"[crash-drill] failures: {r.get('failures', {})}")
print(f"[crash-drill] confirmed-operation records: {r.get('ops_log', {}).get('records', 0)}")
ok = (bots["failed"] == 0 and check == 0 and verify == 0
      and rc.get("resumed", 0) + rc.get("rejoined", 0) >= rc.get("disconnections", 0)
      and after_restart <= max_p99_ms)
print(f"[crash-drill] {'PASS' if ok else 'FAIL'} (loadgen exit {status})")
sys.exit(0 if ok else 1)
EOF
