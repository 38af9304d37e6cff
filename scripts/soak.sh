#!/usr/bin/env bash
# The soak (bench/src/soak): edgerail run as production runs it, under faults on a seeded schedule,
# with every read checked against what the database committed. Exits non-zero on any violation.
#
#   scripts/soak.sh [--bin DIR] [--out FILE] [bench soak options…]
#
# DIR holds the api, warmer and bench binaries (default target/debug; bench/run.sh passes the
# deploy build). The soak gets a PostgreSQL cluster of its own (`soak`, port 5441,
# max_connections = 40), since it restarts it, and a PgBouncer of its own (6441, transaction
# pooling, pool 4), since it kills it. Everything listens on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

BIN=target/debug
OUT=$EDGERAIL_RUN/soak.json
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) BIN=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        *) break ;;
    esac
done

ensure_debs varnish varnish-modules pgbouncer
VERSION=$(pg_version)
SOAK_PORT=${SOAK_PG_PORT:-5441}
SOAK_POOLER_PORT=${SOAK_PGBOUNCER_PORT:-6441}
ensure_cluster "$VERSION" soak "$SOAK_PORT" 40
SOAK_PG="postgres://$PG_ROLE:$PG_PASSWORD@127.0.0.1:$SOAK_PORT"
POOLER_DIR=$EDGERAIL_RUN/soak-pgbouncer
start_pgbouncer "$POOLER_DIR" "$SOAK_POOLER_PORT" "$SOAK_PG" 4

sudo_prefix=""
[ "$(id -u)" -eq 0 ] || sudo_prefix="sudo"
RESTART_PG="$sudo_prefix pg_ctlcluster $VERSION soak restart -m fast"
RESTART_POOLER="$sudo_prefix sh -c 'kill -9 \$(cat $POOLER_DIR/pgbouncer.pid) 2>/dev/null; rm -f $POOLER_DIR/pgbouncer.pid; su postgres -s /bin/sh -c \"pgbouncer -d -q $POOLER_DIR/pgbouncer.ini\"'"

mkdir -p "$EDGERAIL_RUN/soak" "$(dirname "$OUT")"
log "soak ($*)"
"$BIN/bench" soak --api "$BIN/api" --warmer "$BIN/warmer" \
    --varnishd "$(command -v varnishd || echo /usr/sbin/varnishd)" --vcl local/varnish.vcl \
    --postgres "$SOAK_PG" --pgbouncer "postgres://$PG_ROLE:$PG_PASSWORD@127.0.0.1:$SOAK_POOLER_PORT" \
    --restart-postgres "$RESTART_PG" --restart-pgbouncer "$RESTART_POOLER" \
    --run-dir "$EDGERAIL_RUN/soak" --out "$OUT" "$@"
