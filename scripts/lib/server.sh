# Shared by scripts/loadtest.sh and scripts/soak.sh (source it): a release server on
# 127.0.0.1 with a fresh temporary data directory, stopped (SIGTERM) and removed on exit.
# Uses $port and $metrics_port; sets $data and $server_pid. Extra arguments go to `serve`.

data="$(mktemp -d)"
server_pid=""
loadgen_pid=""
cleanup_server() {
    if [ -n "$loadgen_pid" ]; then kill "$loadgen_pid" 2>/dev/null || true; fi
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$data"
}
trap cleanup_server EXIT

# start_server [SERVE_ARGS...]: starts it and waits (at most 10 s) until it is ready.
start_server() {
    "${ZONEHOST_BIN:-target/release/zonehost}" serve --data-dir "$data" --listen "127.0.0.1:$port" \
        --metrics-listen "127.0.0.1:$metrics_port" "$@" >"$data/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 100); do
        [ -f "$data/cert.der" ] && curl -fs "http://127.0.0.1:$metrics_port/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    kill -0 "$server_pid" 2>/dev/null || { cat "$data/server.log" >&2; exit 1; }
}
