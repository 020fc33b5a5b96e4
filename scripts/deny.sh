#!/usr/bin/env bash
# Dependency hygiene with cargo-deny (config: deny.toml). Installs cargo-deny (crates.io,
# `cargo install --locked`) when missing. Licenses, bans and sources are checked offline;
# advisories use the RustSec database: fetched when the network allows, otherwise the copy
# already in ~/.cargo/advisory-dbs, and skipped (loudly) when there is none.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deny >/dev/null 2>&1; then
    echo "== installing cargo-deny" >&2
    cargo install --locked cargo-deny >&2
fi

echo "== cargo deny: licenses, bans, sources"
cargo deny --log-level warn check licenses bans sources

echo "== cargo deny: advisories"
if cargo deny --log-level warn fetch db >/dev/null 2>&1; then
    cargo deny --log-level warn check advisories
elif ls -d "${CARGO_HOME:-$HOME/.cargo}"/advisory-dbs/*/ >/dev/null 2>&1; then
    echo "(offline: using the local advisory database)"
    cargo deny --log-level warn --offline check advisories
else
    echo "SKIPPED: no advisory database (offline and none cached); run 'cargo deny fetch' online" >&2
fi
