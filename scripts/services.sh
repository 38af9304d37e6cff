# Helpers for scripts/test.sh: install and start the services the tests talk to.
# Sourced, not run. Everything listens on loopback only and state lives under $EDGERAIL_RUN.

EDGERAIL_RUN=${EDGERAIL_RUN:-/tmp/edgerail-test}
PG_PORT=${PG_PORT:-5432}
PGBOUNCER_PORT=${PGBOUNCER_PORT:-6432}
PG_ROLE=edgerail
PG_PASSWORD=edgerail

log() { printf '==> %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# apt-get install the given packages if any is missing (one `apt-get update` at most).
ensure_debs() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# Starts the Debian PostgreSQL 15 cluster (initdb refuses root, so the packaged cluster is used)
# and creates the test role.
start_postgres() {
    ensure_debs postgresql-15 postgresql-client-15
    if ! pg_lsclusters -h 2>/dev/null | awk '$1 == 15 && $2 == "main"' | grep -q .; then
        as_root pg_createcluster 15 main --port "$PG_PORT" >/dev/null
    fi
    if ! pg_lsclusters -h | awk '$1 == 15 && $2 == "main" {print $4}' | grep -q online; then
        log "starting PostgreSQL 15"
        as_root pg_ctlcluster 15 main start
    fi
    for _ in $(seq 1 50); do
        pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && break
        sleep 0.2
    done
    pg_isready -h 127.0.0.1 -p "$PG_PORT" >/dev/null || { echo "PostgreSQL did not start" >&2; return 1; }
    as_root su postgres -c "psql -q -p $PG_PORT -v ON_ERROR_STOP=1" <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$PG_ROLE') THEN
    CREATE ROLE $PG_ROLE LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
  END IF;
END \$\$;
SQL
    export PGPASSWORD=$PG_PASSWORD
    # Databases left behind by earlier runs.
    psql -h 127.0.0.1 -p "$PG_PORT" -U "$PG_ROLE" -d postgres -Atqc \
        "SELECT datname FROM pg_database WHERE datname LIKE 'edgerail_t%'" | while read -r db; do
        psql -h 127.0.0.1 -p "$PG_PORT" -U "$PG_ROLE" -d postgres -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" || true
    done
    export TEST_DATABASE_URL="postgres://$PG_ROLE:$PG_PASSWORD@127.0.0.1:$PG_PORT"
}

# Starts PgBouncer in transaction pooling mode in front of every database, strict about startup
# parameters (like a default install), so the tests prove the API's statements are pooler-safe.
#   start_pgbouncer [dir] [listen port] [PostgreSQL port] [pool size]
start_pgbouncer() {
    ensure_debs pgbouncer
    local dir=${1:-$EDGERAIL_RUN/pgbouncer} listen=${2:-$PGBOUNCER_PORT} upstream=${3:-$PG_PORT} pool=${4:-20}
    if [ -f "$dir/pgbouncer.pid" ] && kill -0 "$(cat "$dir/pgbouncer.pid")" 2>/dev/null; then
        kill "$(cat "$dir/pgbouncer.pid")" 2>/dev/null || true
        sleep 0.5
    fi
    as_root mkdir -p "$dir"
    cat > "$dir/pgbouncer.ini" <<INI
[databases]
* = host=127.0.0.1 port=$upstream

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $listen
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = $pool
max_client_conn = 1000
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
    printf '"%s" "%s"\n' "$PG_ROLE" "$PG_PASSWORD" > "$dir/userlist.txt"
    as_root chown -R postgres:postgres "$dir"
    log "starting PgBouncer on 127.0.0.1:$listen (transaction pooling, pool $pool)"
    as_root su postgres -s /bin/sh -c "pgbouncer -d -q $dir/pgbouncer.ini"
    for _ in $(seq 1 50); do
        pg_isready -q -h 127.0.0.1 -p "$listen" && break
        sleep 0.2
    done
    export TEST_PGBOUNCER_URL="postgres://$PG_ROLE:$PG_PASSWORD@127.0.0.1:$listen"
}

# Installs moto (the CloudFront API stand-in) and starts `moto_server` on loopback.
start_moto() {
    local port=${MOTO_PORT:-5005}
    if ! python3 -c "import moto, flask, flask_cors" 2>/dev/null; then
        log "installing moto, flask, flask-cors"
        python3 -m pip install -q moto flask flask-cors
    fi
    if ! curl -fs "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1; then
        log "starting moto_server on 127.0.0.1:$port"
        mkdir -p "$EDGERAIL_RUN"
        # As a module, so no console-script shim (pyenv) needs rehashing after the install.
        (python3 -m moto.server -H 127.0.0.1 -p "$port" >"$EDGERAIL_RUN/moto.log" 2>&1 &)
        for _ in $(seq 1 100); do
            curl -fs "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1 && break
            sleep 0.2
        done
    fi
    curl -fs "http://127.0.0.1:$port/moto-api/" >/dev/null || { echo "moto_server did not start" >&2; return 1; }
    export TEST_MOTO_URL="http://127.0.0.1:$port"
}

# Varnish 7.1 with varnish-modules (xkey); tests start their own instances with local/varnish.vcl.
ensure_varnish() {
    ensure_debs varnish varnish-modules curl
    export TEST_VARNISHD
    TEST_VARNISHD=$(command -v varnishd || echo /usr/sbin/varnishd)
    # The packaged service is not needed (and would hold port 6081).
    as_root systemctl stop varnish >/dev/null 2>&1 || true
}

# cfn-lint, run through Python so a fresh install needs no PATH or shim refresh.
cfn_lint() {
    python3 -c "import cfnlint" 2>/dev/null || python3 -m pip install -q cfn-lint
    python3 -c "import sys; from cfnlint.runner import main; sys.argv[0] = 'cfn-lint'; sys.exit(main())" "$@"
}

# Builds the seeded template database the tests clone (CREATE DATABASE … TEMPLATE is a file copy,
# much faster than migrating and seeding per test), and a seeded SQLite file for the same purpose.
make_fixtures() {
    local api=$1
    psql -h 127.0.0.1 -p "$PG_PORT" -U "$PG_ROLE" -d postgres -qc "DROP DATABASE IF EXISTS edgerail_template WITH (FORCE)"
    psql -h 127.0.0.1 -p "$PG_PORT" -U "$PG_ROLE" -d postgres -qc "CREATE DATABASE edgerail_template"
    DATABASE_URL="$TEST_DATABASE_URL/edgerail_template" "$api" seed --demo --scale 0.1 2>/dev/null
    mkdir -p "$EDGERAIL_RUN"
    rm -f "$EDGERAIL_RUN/template.sqlite"*
    DATABASE_URL="sqlite://$EDGERAIL_RUN/template.sqlite" "$api" seed --demo --scale 0.1 2>/dev/null
    export TEST_PG_TEMPLATE=edgerail_template
    export TEST_SQLITE_TEMPLATE="$EDGERAIL_RUN/template.sqlite"
}
