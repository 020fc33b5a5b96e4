#!/usr/bin/env bash
# Regenerates the committed seed corpora in fuzz/seeds/<target>/ from the protocol's own
# encoders (examples/gen_seeds.rs). Run after a wire-format change, then commit fuzz/seeds.
set -euo pipefail
cd "$(dirname "$0")"
rm -rf seeds
cargo +nightly run --quiet --example gen_seeds -- seeds
