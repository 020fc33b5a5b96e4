#!/usr/bin/env bash
# Import circles between the files of each crate (issue 14). Builds scripts/module-graph/main.rs
# (std only, plain rustc, about a second) into target/module-graph/ when it changed, then runs it.
#
#   scripts/module-graph.sh                               # report the circles of every crate
#   scripts/module-graph.sh src client                    # report these crates
#   scripts/module-graph.sh --enforce game protocol       # exit 1 on a circle in these crates
#   scripts/module-graph.sh --self-test                   # the checker's own tests (fixtures/)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
src="$root/scripts/module-graph/main.rs"
out="${CARGO_TARGET_DIR:-$root/target}/module-graph"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
if [ "${1:-}" = --self-test ]; then
    rustc --edition 2021 --test -o "$out/module-graph-test" "$src"
    exec "$out/module-graph-test" -q
fi
bin="$out/module-graph"
if [ ! -x "$bin" ] || [ "$src" -nt "$bin" ]; then
    rustc --edition 2021 -C opt-level=1 -o "$bin" "$src"
fi
cd "$root"
exec "$bin" "$@"
