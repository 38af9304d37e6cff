#!/usr/bin/env bash
# The local stack: the API on 127.0.0.1:3000 and the local edge (Varnish with local/varnish.vcl) on
# 127.0.0.1:8080 in front of it; with --warmer, also the warmer loop, purging and re-warming the
# edge every WARM_EVERY (default 60s). Ctrl-C stops everything.
#
#   ./local/run.sh            API + edge
#   ./local/run.sh --warmer   API + edge + warmer
#
# Uses DATABASE_URL when set, else the embedded SQLite database (./data/edgerail.sqlite).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

API_ADDR=${BIND_ADDR:-127.0.0.1:3000}
EDGE_PORT=${EDGE_PORT:-8080}
WARM_EVERY=${WARM_EVERY:-60s}
WITH_WARMER=0
[ "${1:-}" = "--warmer" ] && WITH_WARMER=1

ensure_debs varnish varnish-modules curl
cargo build --release -p api -p warmer

# The warmer's mark, shared by the API and the warmer so that the warmer's fetches are not learned
# as a viewer's; random unless set.
export WARM_SECRET=${WARM_SECRET:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}

run="$EDGERAIL_RUN/local"
mkdir -p "$run"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

BIND_ADDR=$API_ADDR ./target/release/api &
pids+=($!)
for _ in $(seq 1 300); do
    curl -fs "http://$API_ADDR/health-check" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -fs "http://$API_ADDR/health-check" >/dev/null || { echo "the API did not start" >&2; exit 1; }

sed -e "s/\.host = \"127.0.0.1\";/.host = \"${API_ADDR%:*}\";/" -e "s/\.port = \"3000\";/.port = \"${API_ADDR##*:}\";/" \
    local/varnish.vcl > "$run/edge.vcl"
varnishd -F -n "$run/varnish" -a "127.0.0.1:$EDGE_PORT" -f "$run/edge.vcl" -s malloc,256m &
pids+=($!)
for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$EDGE_PORT/health-check" >/dev/null 2>&1 && break
    sleep 0.1
done
log "API on http://$API_ADDR, edge on http://127.0.0.1:$EDGE_PORT (try: curl -i http://127.0.0.1:$EDGE_PORT/v1/lines)"

if [ "$WITH_WARMER" = 1 ]; then
    DATABASE_URL=${DATABASE_URL:-sqlite://./data/edgerail.sqlite} \
    INVALIDATOR=purge PURGE_URL="http://127.0.0.1:$EDGE_PORT" WARM_BASE_URL="http://127.0.0.1:$EDGE_PORT" \
        ./target/release/warmer --every "$WARM_EVERY" &
    pids+=($!)
    log "warmer: every $WARM_EVERY, purging and warming the edge"
fi
wait -n "${pids[@]}"
