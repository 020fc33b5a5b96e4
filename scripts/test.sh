#!/usr/bin/env bash
# The whole test suite: unit, property and loopback-QUIC integration tests of every crate,
# plus the suites that need external tools (installed by their own scripts when missing).
# Bounded: every network test targets 127.0.0.1 only and ends by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test (workspace, all targets)"
cargo test --workspace --all-targets --locked

echo "== doc tests"
cargo test --workspace --doc --locked

if [ "${SKIP_CRASH_DRILL:-0}" != 1 ]; then
  echo "== crash drill, short form (20 bots, kill -9, restart, store check; under 60 s)"
  PROFILE=debug PLAYERS=20 DURATION=15 KILL_AT=6 RAMP_UP=2 scripts/crash-drill.sh
fi

if [ -x scripts/prometheus-test.sh ] && [ "${SKIP_PROMETHEUS_TEST:-0}" != 1 ]; then
  echo "== real Prometheus test"
  scripts/prometheus-test.sh
fi

if [ -x fuzz/run-smoke.sh ] && [ "${SKIP_FUZZ:-0}" != 1 ]; then
  echo "== fuzz smoke runs"
  FUZZ_SECONDS="${FUZZ_SECONDS:-20}" fuzz/run-smoke.sh
fi
echo "== all test suites passed"
