#!/usr/bin/env bash
# The README's first command, timed as a new user meets it: a clean clone of HEAD, then
# `cargo run --release -p api` until the API answers `/v1/lines` (the build, the embedded
# database's creation, migration and demo seeding included). Uses the registry already downloaded
# (~/.cargo), nothing else: a target directory of its own inside the clone. Run it on an otherwise
# idle machine; it prints the seconds, the build's own time and the machine.
#
#   ./bench/quickstart.sh [port]      (default 3300, so a running API on 3000 is left alone)
set -euo pipefail
cd "$(dirname "$0")/.."
port=${1:-3300}
clone=$(mktemp -d /tmp/edgerail-quickstart.XXXXXX)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$clone"
}
trap cleanup EXIT INT TERM

git clone --quiet "$(pwd)" "$clone"
commit=$(git -C "$clone" rev-parse --short HEAD)
cd "$clone"
started=$(date +%s.%N)
BIND_ADDR="127.0.0.1:$port" cargo run --release -p api >"$clone/run.log" 2>&1 &
pid=$!
until curl -sf "http://127.0.0.1:$port/v1/lines" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "the API exited before answering:" >&2
        tail -20 "$clone/run.log" >&2
        exit 1
    fi
    sleep 0.2
done
answered=$(date +%s.%N)
build=$(grep -o 'Finished `release` profile.* in .*' "$clone/run.log" | sed 's/.* in //')
cores=$(nproc)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
printf 'quick start (commit %s, %s, %s cores, %s): answered %.0f s after `cargo run --release -p api` (build %s)\n' \
    "$commit" "$(date -u +%Y-%m-%d)" "$cores" "$cpu" "$(echo "$answered - $started" | bc)" "$build"
