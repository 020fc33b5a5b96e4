#!/usr/bin/env bash
# The whole test suite: unit, property and loopback-QUIC integration tests of every crate,
# plus the suites that need external tools (installed by their own scripts when missing).
# Bounded: every network test targets 127.0.0.1 only and ends by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== import circles between files (scripts/module-graph.sh: the server crate . and every member)"
scripts/module-graph.sh --self-test >/dev/null
scripts/module-graph.sh --enforce . game protocol client loadgen client-ffi

# The CQL node (Apache Cassandra, scripts/cql-node.sh) for the suites gated on SCYLLA_URI:
# the ScyllaDB/CQL store conformance, the three-process cluster test and the CQL crash test.
# CI must run them (it fails without Java/Maven); a developer without them gets a loud SKIPPED.
cql_started=0
stop_cql() {
    if [ "$cql_started" = 1 ]; then scripts/cql-node.sh stop || true; fi
}
trap stop_cql EXIT
if [ -n "${SCYLLA_URI:-}" ]; then
    echo "== CQL suites against SCYLLA_URI=$SCYLLA_URI"
    export ZONEHOST_CQL_REQUIRED=1
elif [ "${SKIP_CQL:-0}" != 1 ] && scripts/cql-node.sh available; then
    echo "== starting a local CQL node (Apache Cassandra)"
    cql_t0=$SECONDS
    cql_started=1
    SCYLLA_URI="$(scripts/cql-node.sh start)"
    export SCYLLA_URI ZONEHOST_CQL_REQUIRED=1
    echo "== CQL node at $SCYLLA_URI, up in $((SECONDS - cql_t0)) s"
elif [ "${CI:-}" = true ]; then
    echo "error: CI needs the CQL node (Java 11/17 and Maven) for the CQL suites" >&2
    exit 1
else
    echo "=================================================================="
    echo "SKIPPED: the CQL suites (no Java 11/17 or Maven here, or SKIP_CQL=1);"
    echo "         the embedded-store suites run. See scripts/cql-node.sh."
    echo "=================================================================="
fi

echo "== cargo test (workspace, all targets)"
cargo test --workspace --all-targets --locked

echo "== doc tests"
cargo test --workspace --doc --locked

# Only the cargo tests use the CQL node: stop it before the load-bearing suites below (its
# JVM's background work starved the Prometheus test's load generator on 2 cores).
if [ "$cql_started" = 1 ]; then
    scripts/cql-node.sh stop
    cql_started=0
fi

if [ "${SKIP_CRASH_DRILL:-0}" != 1 ]; then
  echo "== crash drill, short form (20 bots of real play, kill -9, restart, store check, verify-ops; under 60 s)"
  PROFILE=debug PLAYERS=20 DURATION=15 KILL_AT=6 RAMP_UP=2 scripts/crash-drill.sh
fi

if [ -x scripts/prometheus-test.sh ] && [ "${SKIP_PROMETHEUS_TEST:-0}" != 1 ]; then
  echo "== real Prometheus test"
  scripts/prometheus-test.sh
fi

if [ -x scripts/alert-drill.sh ] && [ "${SKIP_ALERT_DRILL:-0}" != 1 ]; then
  # Short form (rules at 1/10 time scale): kill -9, freeze, overload, bad tokens, junk UDP,
  # SIGTERM drain and normal load against a release server; the Prometheus test above
  # installed prometheus/promtool and built the release binaries it reuses.
  echo "== alert drill, short form (every shipped alert rule at 1/10 time scale)"
  scripts/alert-drill.sh
fi

if [ -x fuzz/run-smoke.sh ] && [ "${SKIP_FUZZ:-0}" != 1 ]; then
  echo "== fuzz smoke runs"
  FUZZ_SECONDS="${FUZZ_SECONDS:-20}" fuzz/run-smoke.sh
fi
# ---- C client library (issue 15) ----------------------------------------------------------
# The committed header client-ffi/include/zonehost.h must be what cbindgen generates, and the
# C examples must be valgrind-clean: tests/c_client.rs skips its valgrind runs (loudly) when
# valgrind is missing, so install it here and run them again with valgrind required.
echo "== C client library: header up to date, C examples under valgrind"
scripts/ffi-header.sh --check
if ! command -v valgrind >/dev/null 2>&1; then
    echo "== installing valgrind"
    sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
    $sudo_ apt-get install -y valgrind || { $sudo_ apt-get update && $sudo_ apt-get install -y valgrind; }
fi
ZONEHOST_VALGRIND_REQUIRED=1 cargo test --locked --test c_client c_programs_are_valgrind_clean
# ---- end of the C client library block -----------------------------------------------------

echo "== all test suites passed"
