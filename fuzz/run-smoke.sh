#!/usr/bin/env bash
# Smoke-fuzzes every target of this cargo-fuzz project for ${FUZZ_SECONDS:-20} seconds
# each, starting from the committed seeds, and fails if any target crashes, panics,
# leaks past the RSS limit or times out. Needs rustup with a nightly toolchain
# (`rustup toolchain install nightly`); installs cargo-fuzz if missing.
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
toolchain="${FUZZ_TOOLCHAIN:-nightly}"
rss_mb="${FUZZ_RSS_LIMIT_MB:-2048}"

if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
    echo "error: rustup toolchain '$toolchain' is missing: rustup toolchain install $toolchain" >&2
    exit 2
fi
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
