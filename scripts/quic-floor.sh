#!/usr/bin/env bash
# The transport floor on this machine: examples/quic_floor.rs's server and client (zonehost's
# QUIC configuration and socket set-up, loadgen's client endpoint, no game) at N connections,
# with each process's CPU (% of one core) over the steady-state window.
#
#   CONNECTIONS=1000 SECONDS_=30 RATE=60 scripts/quic-floor.sh
#
# Only 127.0.0.1 is used (UDP port ${PORT:-24600}). Extra client flags: CLIENT_ARGS, server: SERVER_ARGS.
# FLOOR_BIN runs that quic_floor binary instead of building this tree's (A/B of two builds).
set -euo pipefail
cd "$(dirname "$0")/.."
connections="${CONNECTIONS:-1000}"
seconds="${SECONDS_:-30}"
ramp="${RAMP_UP:-10}"
rate="${RATE:-60}"
port="${PORT:-24600}"
if [ -n "${FLOOR_BIN:-}" ]; then
    bin="$FLOOR_BIN"
else
    cargo build --release --locked --example quic_floor >&2
    bin=target/release/examples/quic_floor
fi
data="$(mktemp -d)"
server_pid=""
trap '[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$data"' EXIT
# shellcheck disable=SC2086
"$bin" server --listen "127.0.0.1:$port" --data-dir "$data" --rate "$rate" ${SERVER_ARGS:-} &
server_pid=$!
for _ in $(seq 1 50); do [ -f "$data/cert.der" ] && break; sleep 0.1; done
# shellcheck disable=SC2086
"$bin" client --server "127.0.0.1:$port" --cert "$data/cert.der" --connections "$connections" \
    --seconds "$seconds" --ramp-up "$ramp" --rate "$rate" ${CLIENT_ARGS:-} &
client_pid=$!
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
sleep $((ramp + 3))
s0=$(ticks "$server_pid"); c0=$(ticks "$client_pid"); t0=$(date +%s.%N)
sleep $((seconds - 5))
s1=$(ticks "$server_pid"); c1=$(ticks "$client_pid"); t1=$(date +%s.%N)
# Resident memory of the server with every connection up (the whole process, as loadgen's
# "server RSS per player" divides zonehost's whole RSS by its players).
rss_kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$server_pid/status")
anon_kib=$(awk '/^RssAnon:/ {print $2}' "/proc/$server_pid/status")
file_kib=$(awk '/^RssFile:/ {print $2}' "/proc/$server_pid/status")
wait "$client_pid"
hz="$(getconf CLK_TCK)"
echo "steady state over $(echo "$t1 - $t0" | bc | xargs printf '%.1f') s: server $(echo "($s1 - $s0) / $hz / ($t1 - $t0) * 100" | bc -l | xargs printf '%.1f')% of one core, client $(echo "($c1 - $c0) / $hz / ($t1 - $t0) * 100" | bc -l | xargs printf '%.1f')%"
echo "server RSS $(echo "$rss_kib / 1024" | bc -l | xargs printf '%.1f') MiB = $(echo "$rss_kib / $connections" | bc -l | xargs printf '%.1f') KiB per connection; anonymous $(echo "$anon_kib / $connections" | bc -l | xargs printf '%.1f') KiB per connection, file-backed $(echo "$file_kib / 1024" | bc -l | xargs printf '%.1f') MiB"
