#!/usr/bin/env bash
# Smoke-fuzzes every target of this cargo-fuzz project for ${FUZZ_SECONDS:-20} seconds
# each, starting from the committed seeds, and fails if any target crashes, panics,
# leaks past the RSS limit or times out. Uses the nightly toolchain when rustup has one,
# else stable with RUSTC_BOOTSTRAP=1 (FUZZ_TOOLCHAIN=... picks one); installs cargo-fuzz
# if missing.
#
#   fuzz/run-smoke.sh                      # every target, 20 s each
#   FUZZ_SECONDS=60 fuzz/run-smoke.sh      # longer
#   fuzz/run-smoke.sh token snapshot       # only these targets
#
# Crash inputs land in fuzz/artifacts/<target>/; reproduce one with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
cd "$(dirname "$0")"

seconds="${FUZZ_SECONDS:-20}"
rss_mb="${FUZZ_RSS_LIMIT_MB:-2048}"

# cargo-fuzz needs nightly flags (-Z sanitizer, coverage instrumentation). Use the nightly
# toolchain when it is installed, else the stable one with RUSTC_BOOTSTRAP=1 (which unlocks
# the same flags; AddressSanitizer's runtime ships with every toolchain).
if [ -n "${FUZZ_TOOLCHAIN:-}" ]; then
    toolchain="$FUZZ_TOOLCHAIN"
elif rustup run nightly rustc --version >/dev/null 2>&1; then
    toolchain=nightly
else
    toolchain=stable
fi
if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
    echo "error: rustup toolchain '$toolchain' is missing: rustup toolchain install $toolchain" >&2
    exit 2
fi
if [ "$toolchain" != nightly ]; then
    export RUSTC_BOOTSTRAP=1
fi
echo "fuzzing with $(rustup run "$toolchain" rustc --version)${RUSTC_BOOTSTRAP:+ (RUSTC_BOOTSTRAP=1)}" >&2
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo "+$toolchain" fuzz list)
fi

# One build for all targets (the default profile of `cargo fuzz run`: optimized, with
# debug assertions, overflow checks and AddressSanitizer).
cargo "+$toolchain" fuzz build

failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    if [ -d "seeds/$t" ]; then
        cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
    fi
    echo "=== $t: ${seconds}s ===" >&2
    if ! cargo "+$toolchain" fuzz run "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb="$rss_mb" -timeout=10 \
        -print_final_stats=1; then
        failed+=("$t")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "all ${#targets[@]} targets ran ${seconds}s without a crash" >&2
