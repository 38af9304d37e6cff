#!/usr/bin/env bash
# The soak (soak/, a crate of its own): edgerail run as production runs it, under faults on a seeded schedule,
# with every read checked against what the database committed. Exits non-zero on any violation.
#
#   scripts/soak.sh [--bin DIR] [--out FILE] [soak options…]
#
# DIR holds the api, warmer and soak binaries (default target/debug; bench/run.sh passes the
# deploy build). It exits 1 when the product broke a rule, and 3 when the soak's own harness
# failed (a fault it could not provoke or end): such a run is no verdict on the product. The soak
# gets a PostgreSQL cluster of its own (`soak`, port 5441, max_connections = 64), since it
# restarts it, and a PgBouncer of its own (6441, transaction pooling, pool 4 per user), since it
# kills it.
# Everything listens on loopback.
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
# The secrets some instances and the warmer read their database URL from (one names the server,
# one PgBouncer), which the rotation fault rotates: moto's Secrets Manager.
start_moto
VERSION=$(pg_version)
SOAK_PORT=${SOAK_PG_PORT:-5441}
SOAK_POOLER_PORT=${SOAK_PGBOUNCER_PORT:-6441}
# Room for every client at once: the instances directly (the reserved concurrency: 10, 12 in the
# long run), PgBouncer's cap (13), the warmer's overlapping and killed invocations, the writers and
# the faults' own sessions. A cluster made with fewer is raised once (a restart).
SOAK_MAX_CONNECTIONS=64
ensure_cluster "$VERSION" soak "$SOAK_PORT" "$SOAK_MAX_CONNECTIONS"
if [ "$(as_root su postgres -c "psql -qAt -p $SOAK_PORT -c 'SHOW max_connections'")" != "$SOAK_MAX_CONNECTIONS" ]; then
    as_root su postgres -c "psql -q -p $SOAK_PORT -c 'ALTER SYSTEM SET max_connections = $SOAK_MAX_CONNECTIONS'" >/dev/null
    as_root pg_ctlcluster "$VERSION" soak restart
fi
# Lock waits over a second are logged, with who waited: what a failure's diagnosis prints.
as_root su postgres -c "psql -q -p $SOAK_PORT -c \"ALTER SYSTEM SET log_lock_waits = on\" \
    -c \"ALTER SYSTEM SET log_line_prefix = '%m [%p] %a '\" -c 'SELECT pg_reload_conf()'" >/dev/null
SOAK_PG="postgres://$PG_ROLE:$PG_PASSWORD@127.0.0.1:$SOAK_PORT"
POOLER_DIR=$EDGERAIL_RUN/soak-pgbouncer
# The rotated roles reach the server through PgBouncer too, which looks their passwords up there.
# Three users connect through it at once (the pooled instances' role, and both rotating ones while
# an alternating rotation moves the instances from one to the other), with a pool of 4 each: its
# server connections are capped at 4 × 3 + 1 (see start_pgbouncer).
POOL_PER_USER=4
POOLER_USERS=3
start_pgbouncer "$POOLER_DIR" "$SOAK_POOLER_PORT" "$SOAK_PG" "$POOL_PER_USER" auth-query "$POOLER_USERS"
POOLER_CAP=$((POOL_PER_USER * POOLER_USERS + 1))

sudo_prefix=""
[ "$(id -u)" -eq 0 ] || sudo_prefix="sudo"
RESTART_PG="$sudo_prefix pg_ctlcluster $VERSION soak restart -m fast"
# PgBouncer's restart as the fault runs it: killed, started again only once the killed process is
# gone (a new one binding the port the old one still holds exits at once, and PgBouncer then stayed
# down until the next restart), and started again until it accepts connections. It fails if
# PgBouncer does not come back, which the soak reports as a failure of its harness.
mkdir -p "$EDGERAIL_RUN"
RESTART_POOLER_SCRIPT=$EDGERAIL_RUN/soak-restart-pgbouncer.sh
cat > "$RESTART_POOLER_SCRIPT" <<SH
#!/bin/sh
pid=\$(cat "$POOLER_DIR/pgbouncer.pid" 2>/dev/null)
if [ -n "\$pid" ]; then
    kill -9 "\$pid" 2>/dev/null
    while kill -0 "\$pid" 2>/dev/null; do sleep 0.05; done
fi
rm -f "$POOLER_DIR/pgbouncer.pid"
for attempt in 1 2 3 4 5; do
    su postgres -s /bin/sh -c "pgbouncer -d -q $POOLER_DIR/pgbouncer.ini" 2>/dev/null
    for _ in \$(seq 1 40); do
        pg_isready -q -h 127.0.0.1 -p $SOAK_POOLER_PORT -U $PG_ROLE -d postgres && exit 0
        sleep 0.05
    done
done
echo "PgBouncer did not start again" >&2
exit 1
SH
RESTART_POOLER="$sudo_prefix sh $RESTART_POOLER_SCRIPT"

mkdir -p "$EDGERAIL_RUN/soak" "$(dirname "$OUT")"
log "soak ($*)"
status=0
"$BIN/soak" --api "$BIN/api" --warmer "$BIN/warmer" \
    --varnishd "$(command -v varnishd || echo /usr/sbin/varnishd)" --vcl local/varnish.vcl \
    --postgres "$SOAK_PG" --pgbouncer "postgres://$PG_ROLE:$PG_PASSWORD@127.0.0.1:$SOAK_POOLER_PORT" \
    --pooler-cap "$POOLER_CAP" \
    --restart-postgres "$RESTART_PG" --restart-pgbouncer "$RESTART_POOLER" --moto "$TEST_MOTO_URL" \
    --run-dir "$EDGERAIL_RUN/soak" --out "$OUT" "$@" || status=$?
if [ "$status" -ne 0 ]; then
    # A CI log keeps no files. Beside the diagnosis the bench printed: the api's and the warmer's
    # lines from 10 s before the first failure to 2 s after it, and PostgreSQL's lock waits.
    python3 - "$OUT" "$EDGERAIL_RUN/soak/api.log" "$EDGERAIL_RUN/soak/warmer.log" >&2 <<'PY' || true
import datetime, json, re, sys
report = json.load(open(sys.argv[1]))
epoch = datetime.datetime.fromisoformat(report["epoch"].replace("Z", "+00:00"))
first = min((f["at"] for f in report["first_failures"]), default=0.0)
stamp = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?)\d*Z")
for log in sys.argv[2:]:
    print(f"--- {log}: warnings from t = {first - 10:.1f} s to {first + 2:.1f} s")
    shown = 0
    for line in open(log, errors="replace"):
        line = re.sub(r"\x1b\[[0-9;]*m", "", line).strip()
        found = stamp.search(line)
        # The warmer's per-page checks (debug, for the comparison with the checker) are left out.
        if not found or "DEBUG" in line[:80]:
            continue
        at = datetime.datetime.fromisoformat(found.group(1) + "+00:00")
        t = (at - epoch).total_seconds()
        if first - 10 <= t <= first + 2 and shown < 80:
            print(f"{t:8.2f} {line[:400]}")
            shown += 1
PY
    echo "--- PostgreSQL (soak) lock waits and errors (last 60)" >&2
    PG_LOG=$(pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "soak" {print $7}')
    grep -E 'still waiting|acquired|ERROR|FATAL' "$PG_LOG" 2>/dev/null | tail -n 60 >&2 || true
fi
exit "$status"
