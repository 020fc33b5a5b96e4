#!/usr/bin/env bash
# Soak test (issue 7): a release server under `loadgen --scenario soak` (churn included) for
# SOAK_SECONDS (default 600). Samples the server's RSS every 10 s and reports it at the end of
# warm-up, in the middle and at the end; fails when memory keeps growing after warm-up (end
# more than SOAK_RSS_SLACK_PCT, default 10 %, above the warm-up sample) or when loadgen fails.
#
#   scripts/soak.sh                         # 10 minutes, the scenario's player count
#   SOAK_SECONDS=120 scripts/soak.sh        # a shorter run
#
# Only 127.0.0.1 is used. Ports: UDP ${PORT:-24533}, metrics ${METRICS_PORT:-29564}.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${SOAK_SECONDS:-600}"
warmup="${SOAK_WARMUP:-60}"
slack="${SOAK_RSS_SLACK_PCT:-10}"
port="${PORT:-24533}"
metrics_port="${METRICS_PORT:-29564}"
report="${REPORT:-target/soak-report.json}"
loadgen_args="${LOADGEN_ARGS:-}"

cargo build --release --locked -p zonehost -p zonehost-loadgen >&2

# shellcheck source=scripts/lib/server.sh
. scripts/lib/server.sh
start_server

# shellcheck disable=SC2086
target/release/loadgen --scenario soak --duration "${seconds}s" \
    --server "127.0.0.1:$port" --cert "$data/cert.der" --token-key "$data/dev-signing.key" \
    --report "$report" $loadgen_args &
loadgen_pid=$!

rss_mib() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$server_pid/status"; }
samples=()
start=$(date +%s)
while kill -0 "$loadgen_pid" 2>/dev/null; do
    sleep 10
    kill -0 "$server_pid" 2>/dev/null || { echo "server died" >&2; tail -50 "$data/server.log" >&2; exit 1; }
    samples+=("$(( $(date +%s) - start )) $(rss_mib)")
done
status=0
wait "$loadgen_pid" || status=$?
loadgen_pid=""

# Sample nearest to a time.
at() { printf '%s\n' "${samples[@]}" | awk -v t="$1" 'BEGIN{best=-1} {d=$1-t; if (d<0) d=-d; if (best<0 || d<best) {best=d; v=$2}} END{print v}'; }
warm="$(at "$warmup")"
middle="$(at $(( (warmup + seconds) / 2 )))"
end="$(printf '%s\n' "${samples[@]}" | tail -1 | awk '{print $2}')"
echo
echo "server RSS (MiB): after warm-up (${warmup} s) $warm, middle $middle, end $end"
printf '%s\n' "${samples[@]}" | awk '{printf "  t=%4ds  %s MiB\n", $1, $2}' > target/soak-rss.txt
echo "RSS samples: target/soak-rss.txt; loadgen report: $report"
if grep -qi "panicked" "$data/server.log"; then
    echo "FAIL: the server panicked (see its log)" >&2
    status=1
fi
echo "server log lines at WARN or ERROR: $(grep -c -E " (WARN|ERROR) " "$data/server.log" || true)"
if awk -v w="$warm" -v e="$end" -v s="$slack" 'BEGIN { exit !(e > w * (1 + s / 100)) }'; then
    echo "FAIL: RSS grew from $warm MiB to $end MiB after warm-up (slack ${slack} %)" >&2
    status=1
fi
[ "$status" -eq 0 ] && echo "soak: PASS" || echo "soak: FAIL (loadgen or memory)"
exit "$status"
