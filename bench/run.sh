#!/usr/bin/env bash
# edgerail benchmarks: builds with the deploy profile (what Lambda runs), runs every measurement,
# prints a markdown report and writes it (with the JSON results and SVG plots) to target/bench/.
# It then publishes the report: bench/RESULTS.md (date, machine, commit), its plots in
# bench/results/, and the summary between the markers in README.md; commit those as they are.
# Not part of CI; about 45 minutes after the build (the soak is fifteen of them, the busy site's
# tables ten), and 9 more the first time, to seed the ten-million-sighting database the writes are
# measured on.
#
#   ./bench/run.sh
#
# Everything runs on loopback: the API, a second PostgreSQL cluster with max_connections = 50
# (port 5433), PgBouncer in front of it (6433, transaction pooling, pool 20), Varnish with
# local/varnish.vcl, wrk; a local Lambda Runtime API (in the bench binary) for Lambda mode.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

OUT=target/bench
mkdir -p "$OUT"
RUN="$EDGERAIL_RUN/bench"
mkdir -p "$RUN"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

ensure_debs wrk zip varnish varnish-modules pgbouncer curl valgrind
PG_VERSION=$(pg_version)
log "building (deploy profile)"
cargo build --profile deploy -p api -p warmer -p bench -p soak --quiet
BIN=${CARGO_TARGET_DIR:-target}/deploy
API=$BIN/api
BENCH=$BIN/bench

# A PostgreSQL as small as the ones Lambda users run into: max_connections = 50.
if ! pg_lsclusters -h | awk -v v="$PG_VERSION" '$1 == v && $2 == "bench"' | grep -q .; then
    as_root pg_createcluster "$PG_VERSION" bench --port 5433 -o max_connections=50 >/dev/null
fi
pg_lsclusters -h | awk -v v="$PG_VERSION" '$1 == v && $2 == "bench" {print $4}' | grep -q online \
    || as_root pg_ctlcluster "$PG_VERSION" bench start
for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5433 && break; sleep 0.2; done
# Restarts the cluster with the given preloaded libraries (the busy-site part loads one).
bench_cluster_with() {
    local set="RESET shared_preload_libraries"
    [ -z "$1" ] || set="SET shared_preload_libraries = '$1'"
    as_root su postgres -c "psql -q -p 5433 -c \"ALTER SYSTEM $set\""
    as_root pg_ctlcluster "$PG_VERSION" bench restart
    for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5433 && break; sleep 0.2; done
}
# A run stopped during that part left it loaded: every other figure is measured without it.
if [ -n "$(as_root su postgres -c "psql -Atq -p 5433 -c 'SHOW shared_preload_libraries'")" ]; then
    bench_cluster_with ""
fi
as_root su postgres -c "psql -q -p 5433" <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'edgerail') THEN
    CREATE ROLE edgerail LOGIN CREATEDB PASSWORD 'edgerail';
  END IF;
END \$\$;
SQL
export PGPASSWORD=edgerail
psql -h 127.0.0.1 -p 5433 -U edgerail -d postgres -qc "DROP DATABASE IF EXISTS edgerail_bench WITH (FORCE)"
psql -h 127.0.0.1 -p 5433 -U edgerail -d postgres -qc "CREATE DATABASE edgerail_bench"
PG=postgres://edgerail:edgerail@127.0.0.1:5433/edgerail_bench
log "seeding the benchmark database"
DATABASE_URL=$PG $API seed --demo --scale 1 2>/dev/null
rm -f "$RUN/bench.sqlite"*
DATABASE_URL="sqlite://$RUN/bench.sqlite" $API seed --demo --scale 1 2>/dev/null

# PgBouncer: transaction pooling, 20 server connections.
start_pgbouncer "$RUN/pgbouncer" 6433 "postgres://edgerail:edgerail@127.0.0.1:5433" 20
as_root chmod -R a+rwX "$RUN"

{
    echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "- machine: $(uname -sm), $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(free -g | awk '/Mem:/ {print $2}') GiB"
    echo "- rustc: $(rustc --version)"
    echo "- commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!bench/RESULTS.md' ':!bench/results' ':!README.md' || echo ' with uncommitted changes')"
} > "$OUT/machine.txt"

wait_http() { for _ in $(seq 1 200); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "$1 did not answer" >&2; return 1; }

# --- Hot path --------------------------------------------------------------------------------
# CPU time per request: the servers share one core, wrk (and PostgreSQL) get the others, so the
# figures are what a request costs the server rather than how the scheduler split two cores. The
# cached route and the bare framework are given next to each other: every round measures them
# back to back (bench/src/hotpath.rs). Every api in this script runs at the log level it has in
# production (`info`: no RUST_LOG, as the template's ApplicationLogLevel), so its figures include
# what logging costs a request there.
log "hot path (CPU time per request, 9 interleaved rounds)"
ROUTE=/v1/formations/10701F
ROUTE_TEMPLATE='/v1/formations/{id}'
SERVER_CPU=$(( $(nproc) - 1 ))
LOAD_CPUS=0-$(( SERVER_CPU > 0 ? SERVER_CPU - 1 : 0 ))
POSTMASTER=$(as_root head -1 "$(pg_lsclusters -h | awk -v v="$PG_VERSION" '$1 == v && $2 == "bench" {print $6}')/postmaster.pid")
as_root taskset -a -p -c "$LOAD_CPUS" "$POSTMASTER" >/dev/null
BIND_ADDR=127.0.0.1:3101 DATABASE_URL=$PG taskset -c "$SERVER_CPU" $API 2>>"$RUN/api.log" & pids+=($!); CACHED_PID=$!
BIND_ADDR=127.0.0.1:3102 DATABASE_URL=$PG LOCAL_CACHE_MAX_BYTES=0 taskset -c "$SERVER_CPU" $API 2>>"$RUN/api.log" & pids+=($!); UNCACHED_PID=$!
wait_http http://127.0.0.1:3101/health-check && wait_http http://127.0.0.1:3102/health-check
BYTES=$(curl -s http://127.0.0.1:3101$ROUTE | wc -c)
taskset -c "$SERVER_CPU" $BENCH ceiling --addr 127.0.0.1:3103 --bytes "$BYTES" --route "$ROUTE_TEMPLATE" & pids+=($!); CEILING_PID=$!
wait_http "http://127.0.0.1:3103$ROUTE"
curl -s http://127.0.0.1:3101$ROUTE >/dev/null
$BENCH hot-path --rounds 9 --duration 3s --wrk-cpus "$LOAD_CPUS" --postmaster "$POSTMASTER" \
    --target "cached|$CACHED_PID|http://127.0.0.1:3101$ROUTE" \
    --target "ceiling|$CEILING_PID|http://127.0.0.1:3103$ROUTE" \
    --target "uncached|$UNCACHED_PID|http://127.0.0.1:3102$ROUTE" \
    --out "$OUT/hotpath.json"
cleanup; pids=()
as_root taskset -a -p -c "0-$SERVER_CPU" "$POSTMASTER" >/dev/null

# Instructions per request under Callgrind: what settles the hit-against-bare-axum ratio, since a
# count does not move with the machine's load as CPU time does (bench/src/instructions.rs).
log "hot path (instructions per request under Callgrind, 2 rounds)"
# /v1/lines keeps its in-process entry for a minute: a run under Callgrind outlasts a formation's.
$BENCH instructions --api $API --database-url "$PG" --route /v1/lines --route-template /v1/lines \
    --rounds 2 --requests 2000 --work-dir "$RUN/callgrind" --out "$OUT/instructions.json"

# --- Cold start --------------------------------------------------------------------------------
log "cold start (20 runs each)"
$BENCH cold-start --api $API --database-url "sqlite://$RUN/bench.sqlite" --postgres-url "$PG" --runs 20 \
    --pooler-url "postgres://edgerail:edgerail@127.0.0.1:6433/edgerail_bench" --out "$OUT/coldstart.json"

# --- Lambda mode ----------------------------------------------------------------------------------
log "Lambda mode (handler time per invocation; Zipf workload at 128 MB)"
$BENCH lambda --api $API --database-url "$PG" --memory 128 --out "$OUT/lambda.json"

# --- Round trips -----------------------------------------------------------------------------------
# BASELINE_API=path/to/older/api compares another build (e.g. from before a change) the same way.
log "database round trips (and miss latency with 1 ms added per round trip)"
$BENCH wire --api $API ${BASELINE_API:+--baseline-api "$BASELINE_API"} --database-url "$PG" --delay-ms 1 \
    --out "$OUT/wire.json"

# --- Connections -------------------------------------------------------------------------------
log "connections"
$BENCH connections --label "through PgBouncer" --url "postgres://edgerail:edgerail@127.0.0.1:6433/edgerail_bench" \
    --admin-url "$PG" --instances 50 --out "$OUT/connections-pgbouncer-50.json"
$BENCH connections --label "through PgBouncer" --url "postgres://edgerail:edgerail@127.0.0.1:6433/edgerail_bench" \
    --admin-url "$PG" --instances 200 --out "$OUT/connections-pgbouncer-200.json"
$BENCH connections --label "direct (max_connections = 50)" --url "$PG" \
    --admin-url "$PG" --instances 200 --out "$OUT/connections-direct-200.json"

# --- Origin offload ------------------------------------------------------------------------------
log "origin offload (Zipf workload through Varnish, writes, warmer ticks)"
# The API on 127.0.0.1:$1 (with the settings after $3), and Varnish with local/varnish.vcl on $2
# in front of it; $3 names their state directory.
edge_stack() {
    local api_port=$1 edge_port=$2 name=$3
    shift 3
    env BIND_ADDR=127.0.0.1:$api_port DATABASE_URL=$PG "$@" $API 2>>"$RUN/api.log" & pids+=($!)
    wait_http http://127.0.0.1:$api_port/health-check
    sed "s/\.port = \"3000\";/.port = \"$api_port\";/" local/varnish.vcl > "$RUN/$name.vcl"
    rm -rf "$RUN/$name"
    varnishd -F -n "$RUN/$name" -a 127.0.0.1:$edge_port -f "$RUN/$name.vcl" -s malloc,256m >/dev/null 2>&1 & pids+=($!)
    wait_http http://127.0.0.1:$edge_port/health-check
}
DATABASE_URL=$PG WARMER_SETTLE=0s $BIN/warmer --once >/dev/null 2>&1 || true
edge_stack 3201 6181 varnish
$BENCH offload --edge http://127.0.0.1:6181 --database-url "$PG" --warmer $BIN/warmer \
    --duration 30s --out "$OUT/offload.json"
cleanup; pids=()

# --- The warm set, fixed against learned ---------------------------------------------------------
# The same kind of workload over every demo URL, once warming only the declared routes and once with
# what the API learned; the API flushes what it learned every 5 s (60 s by default) so a one-minute
# arm has learned something.
log "warm set (fixed against learned, through Varnish)"
edge_stack 3202 6182 varnish-warmset LEARN_FLUSH_INTERVAL=5s
$BENCH warmset --edge http://127.0.0.1:6182 --database-url "$PG" --warmer $BIN/warmer \
    --duration 60s --out "$OUT/warmset.json"
cleanup; pids=()

# --- Writes at scale ------------------------------------------------------------------------------
# Ten years of a busy site (`--scale 100 --days 3650`: 10 million sightings) in a database of its
# own, seeded once and kept across runs (the bench leaves it as it found it; `api migrate` brings
# an older one up to date). BENCH_SCALE changes the volume (and reseeds).
SCALE=${BENCH_SCALE:-100}
PG_SCALE=postgres://edgerail:edgerail@127.0.0.1:5433/edgerail_scale
want=$((SCALE * 100000))
have=$(psql -h 127.0.0.1 -p 5433 -U edgerail -d edgerail_scale -Atc "SELECT count(*) FROM sightings" 2>/dev/null || echo 0)
if [ "$have" != "$want" ]; then
    log "seeding $want sightings over ten years (once; about 9 minutes)"
    psql -h 127.0.0.1 -p 5433 -U edgerail -d postgres -qc "DROP DATABASE IF EXISTS edgerail_scale WITH (FORCE)"
    psql -h 127.0.0.1 -p 5433 -U edgerail -d postgres -qc "CREATE DATABASE edgerail_scale"
    DATABASE_URL=$PG_SCALE $API seed --demo --scale "$SCALE" --days 3650 2>/dev/null
fi
DATABASE_URL=$PG_SCALE $API migrate 2>/dev/null
psql -h 127.0.0.1 -p 5433 -U edgerail -d edgerail_scale -qc "VACUUM ANALYZE"
log "reads at scale ($want sightings: every route's miss, in-process cache off)"
BIND_ADDR=127.0.0.1:3401 DATABASE_URL=$PG_SCALE LOCAL_CACHE_MAX_BYTES=0 $API 2>>"$RUN/api-scale.log" & pids+=($!)
wait_http http://127.0.0.1:3401/health-check
$BENCH reads --base http://127.0.0.1:3401 --database-url "$PG_SCALE" --out "$OUT/reads.json"
cleanup; pids=()
# A hit reads no database: its instructions on this data must be the demo data's.
log "a hit at scale (instructions per request under Callgrind, 1 round)"
$BENCH instructions --api $API --database-url "$PG_SCALE" --route /v1/lines --route-template /v1/lines \
    --rounds 1 --requests 2000 --work-dir "$RUN/callgrind-scale" --out "$OUT/instructions-scale.json"
log "writes at scale ($want sightings: with and without the triggers)"
$BENCH writes --database-url "$PG_SCALE" --out "$OUT/writes.json"

# --- The system's own tables at a busy site's rate ----------------------------------------------
# 50 sightings a second for ten minutes on the same data, viewers through the edge, the warmer
# every minute as the template schedules it, retention in minutes so the levelling shows
# (bench/src/busy.rs). pg_stat_statements (what a poll, a claim and a prune cost) is loaded for
# this part only: it is loaded at the server's start, so the cluster restarts with it and again
# without it, and every other figure is measured without its overhead. BUSY_SECONDS changes the run.
log "the system's tables at a busy site's rate (${BUSY_SECONDS:-600} s, 50 sightings/s, warmer every minute)"
bench_cluster_with pg_stat_statements
as_root su postgres -c "psql -q -p 5433 -d edgerail_scale -c 'CREATE EXTENSION IF NOT EXISTS pg_stat_statements'"
# The run starts from empty system tables: nothing from an earlier run is cached anywhere now.
psql -h 127.0.0.1 -p 5433 -U edgerail -d edgerail_scale -qc \
    "TRUNCATE cache_changes, learned_paths, warm_state, cache_invalidations"
edge_stack 3402 6183 varnish-busy DATABASE_URL=$PG_SCALE LEARN_FLUSH_INTERVAL=5s
$BENCH busy --edge http://127.0.0.1:6183 --database-url "$PG_SCALE" --warmer $BIN/warmer \
    --duration "${BUSY_SECONDS:-600}s" --out "$OUT/busy.json"
cleanup; pids=()
as_root su postgres -c "psql -q -p 5433 -d edgerail_scale -c 'DROP EXTENSION pg_stat_statements'"
bench_cluster_with ""

# --- Soak ------------------------------------------------------------------------------------------
# Fifteen minutes of the deploy build as Lambda runs it, on a million sightings (`--scale 10`, kept
# there by the bulk writer's reloads), every fault kind provoked at least five times, every read
# checked (soak/); a fifth of the reads straight to the instances, so that both layers get well
# over a million checked reads. SOAK_SECONDS, SOAK_SEED and SOAK_SCALE change the run.
log "soak (${SOAK_SECONDS:-900} s, seed ${SOAK_SEED:-1}, scale ${SOAK_SCALE:-10})"
scripts/soak.sh --bin "$BIN" --out "$OUT/soak.json" --duration "${SOAK_SECONDS:-900}s" --seed "${SOAK_SEED:-1}" \
    --scale "${SOAK_SCALE:-10}" --viewers 16 --reserved 12 --direct-share 0.2 || {
    # Exit 3: the harness failed (a fault it could not provoke or end); the report says so.
    if [ $? -eq 3 ]; then log "the soak's harness failed: its verdict says nothing, see $OUT/soak.json"
    else log "the soak failed: see $OUT/soak.json"; fi
}

# --- Size ------------------------------------------------------------------------------------------
log "size"
{
    printf '{"target": "%s", "binaries": [' "$(rustc -vV | awk '/host/ {print $2}')"
    sep=""
    for bin in api warmer cachectl; do
        rm -rf "$RUN/zip" && mkdir -p "$RUN/zip" && cp "$BIN/$bin" "$RUN/zip/bootstrap"
        (cd "$RUN/zip" && zip -q -9 bootstrap.zip bootstrap)
        printf '%s{"name": "%s", "bytes": %s, "zipped": %s}' "$sep" "$bin" "$(stat -c %s "$BIN/$bin")" "$(stat -c %s "$RUN/zip/bootstrap.zip")"
        sep=", "
    done
    printf ']}\n'
} > "$OUT/size.json"

$BENCH report --dir "$OUT" --publish .
log "report: $OUT/report.md, published to bench/RESULTS.md"
