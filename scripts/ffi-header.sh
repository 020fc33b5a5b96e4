#!/usr/bin/env bash
# Regenerates the C header of the client library, client-ffi/include/zonehost.h, with
# cbindgen (installed from crates.io with `cargo install --locked` when missing).
#   scripts/ffi-header.sh           regenerate the header in the tree
#   scripts/ffi-header.sh --check   fail (exit 1, with the diff) when the header in the tree
#                                   is not what cbindgen generates (CI runs this)
set -euo pipefail
cd "$(dirname "$0")/.."

CBINDGEN_VERSION=0.29.4
if ! command -v cbindgen >/dev/null 2>&1; then
    echo "== installing cbindgen $CBINDGEN_VERSION" >&2
    cargo install --locked cbindgen --version "$CBINDGEN_VERSION" >&2
fi

header=client-ffi/include/zonehost.h
generated=$(mktemp)
trap 'rm -f "$generated"' EXIT
cbindgen --quiet --config client-ffi/cbindgen.toml --crate zonehost-client-ffi \
    --output "$generated" client-ffi

if [ "${1:-}" = "--check" ]; then
    if ! diff -u "$header" "$generated"; then
        echo "error: $header differs from the generated header; run scripts/ffi-header.sh" >&2
        exit 1
    fi
    echo "== $header is up to date"
else
    cp "$generated" "$header"
    echo "== wrote $header"
fi
