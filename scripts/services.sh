# Helpers for scripts/test.sh: install and start the services the tests talk to, or use the ones
# given (TEST_DATABASE_URL, TEST_PGBOUNCER_URL, TEST_MOTO_URL, TEST_VARNISHD). Sourced, not run.
# Everything listens on loopback only and state lives under $EDGERAIL_RUN. Works on Debian and
# Ubuntu (apt-get, as root or through sudo).

EDGERAIL_RUN=${EDGERAIL_RUN:-/tmp/edgerail-test}
# Python tools (moto, cfn-lint) live in a virtualenv of their own: nothing is installed into the
# system Python (which Debian and Ubuntu protect, PEP 668).
EDGERAIL_VENV=${EDGERAIL_VENV:-$HOME/.cache/edgerail/venv}
# A PostgreSQL cluster and a PgBouncer of our own, on ports of our own: a host's own services
# (a `main` cluster on 5432, a PgBouncer on 6432, Varnish on 6081) are left alone, never stopped.
PG_CLUSTER=${PG_CLUSTER:-edgerail}
PG_PORT=${PG_PORT:-5439}
PGBOUNCER_PORT=${PGBOUNCER_PORT:-6439}
PG_ROLE=edgerail
PG_PASSWORD=edgerail
# PgBouncer's auth_user when it looks roles up in the server (start_pgbouncer … auth-query).
PGBOUNCER_AUTH_ROLE=pgbouncer_auth

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

# The virtualenv's python, created (and given `pip install` of the arguments) on first use.
venv_python() {
    if [ ! -x "$EDGERAIL_VENV/bin/python" ]; then
        ensure_debs python3 python3-venv
        log "creating the Python virtualenv $EDGERAIL_VENV"
        python3 -m venv "$EDGERAIL_VENV"
    fi
    echo "$EDGERAIL_VENV/bin/python"
}

# Installs Python packages into the virtualenv unless `module` already imports there.
#   venv_install module package…
venv_install() {
    local module=$1 py
    shift
    py=$(venv_python)
    if ! "$py" -c "import $module" 2>/dev/null; then
        log "installing $* (into $EDGERAIL_VENV)"
        "$py" -m pip install -q --disable-pip-version-check "$@"
    fi
}

# The newest PostgreSQL server installed (Debian/Ubuntu layout, /usr/lib/postgresql/N), after
# installing the distribution's default one when there is none. The schema needs 13 or later.
pg_version() {
    local v
    v=$(ls /usr/lib/postgresql 2>/dev/null | grep -E '^[0-9]+$' | sort -n | tail -1)
    if [ -z "$v" ] || [ ! -x "/usr/lib/postgresql/$v/bin/postgres" ]; then
        ensure_debs postgresql postgresql-client
        v=$(ls /usr/lib/postgresql | grep -E '^[0-9]+$' | sort -n | tail -1)
    fi
    if [ -z "$v" ] || [ "$v" -lt 13 ]; then
        echo "PostgreSQL 13 or later is needed (found: ${v:-none})" >&2
        return 1
    fi
    echo "$v"
}

# Host and port of a postgres:// URL, as "host port".
url_host_port() {
    local authority=${1#*://}
    authority=${authority%%/*}
    authority=${authority##*@}
    echo "${authority%:*} ${authority##*:}"
}

# A PostgreSQL cluster of the given version, name and port (`pg_createcluster`, since initdb refuses
# root), created with max_connections when given, started, with the test role.
#   ensure_cluster version name port [max_connections]
ensure_cluster() {
    local version=$1 name=$2 port=$3 max=${4:-}
    ensure_debs "postgresql-$version" "postgresql-client-$version"
    if ! pg_lsclusters -h 2>/dev/null | awk -v v="$version" -v c="$name" '$1 == v && $2 == c' | grep -q .; then
        log "creating PostgreSQL $version cluster $name on port $port"
        as_root pg_createcluster "$version" "$name" --port "$port" ${max:+-o max_connections=$max} >/dev/null
    fi
    if ! pg_lsclusters -h | awk -v v="$version" -v c="$name" '$1 == v && $2 == c {print $4}' | grep -q online; then
        log "starting PostgreSQL $version ($name, port $port)"
        as_root pg_ctlcluster "$version" "$name" start
    fi
    for _ in $(seq 1 50); do
        pg_isready -q -h 127.0.0.1 -p "$port" && break
        sleep 0.2
    done
    pg_isready -h 127.0.0.1 -p "$port" >/dev/null || { echo "PostgreSQL ($name) did not start" >&2; return 1; }
    # Commit timestamps: the warmer measures freshness from each change's commit when they are on.
    if [ "$(as_root su postgres -c "psql -qAt -p $port -c 'SHOW track_commit_timestamp'")" != on ]; then
        log "turning on track_commit_timestamp ($name)"
        as_root su postgres -c "psql -q -p $port -c 'ALTER SYSTEM SET track_commit_timestamp = on'" >/dev/null
        as_root pg_ctlcluster "$version" "$name" restart
        for _ in $(seq 1 50); do
            pg_isready -q -h 127.0.0.1 -p "$port" && break
            sleep 0.2
        done
    fi
    # CREATEROLE: the rotation tests make roles of their own and change their passwords.
    as_root su postgres -c "psql -q -p $port -v ON_ERROR_STOP=1" <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$PG_ROLE') THEN
    CREATE ROLE $PG_ROLE LOGIN CREATEDB CREATEROLE PASSWORD '$PG_PASSWORD';
  END IF;
END \$\$;
ALTER ROLE $PG_ROLE CREATEROLE;
SQL
}

# PostgreSQL for the tests: the one at TEST_DATABASE_URL when given (postgres://role:password@host:port,
# a role that may create databases and roles), else a cluster of our own (`pg_createcluster`, since initdb
# refuses root) of the newest installed version, with the test role. Exports TEST_DATABASE_URL.
start_postgres() {
    if [ -n "${TEST_DATABASE_URL:-}" ]; then
        log "using the PostgreSQL at TEST_DATABASE_URL"
        command -v psql >/dev/null || ensure_debs postgresql-client
        psql "$TEST_DATABASE_URL/postgres" -qAtc "SELECT 1" >/dev/null \
            || { echo "TEST_DATABASE_URL does not answer" >&2; return 1; }
        [ "$(psql "$TEST_DATABASE_URL/postgres" -qAtc "SHOW track_commit_timestamp")" = on ] || {
            echo "the PostgreSQL at TEST_DATABASE_URL needs track_commit_timestamp = on (the tests check" \
                "freshness measured from commits)" >&2
            return 1
        }
        return 0
    fi
    ensure_cluster "$(pg_version)" "$PG_CLUSTER" "$PG_PORT"
    export TEST_DATABASE_URL="postgres://$PG_ROLE:$PG_PASSWORD@127.0.0.1:$PG_PORT"
    # Databases left behind by earlier runs.
    psql "$TEST_DATABASE_URL/postgres" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'edgerail_t%'" |
        while read -r db; do
            psql "$TEST_DATABASE_URL/postgres" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" || true
        done
}

# Installs, in template1 of the local cluster on `port` (so in every database created from it
# later), what PgBouncer's auth_query needs: a login role of its own, `pgbouncer_auth` (its auth_user,
# whose plain password PgBouncer keeps, since from a SCRAM secret alone it can log in to the server
# only after a client has logged in through it), and the function it calls, which returns the
# stored SCRAM secret of a login role that is not a superuser and which only that role may run.
# `role` (the tests' role) is made a member of it, so that it may end PgBouncer's connections as
# that role, as DROP DATABASE … WITH (FORCE) does.
#   install_pgbouncer_lookup port role
install_pgbouncer_lookup() {
    local port=$1 role=$2
    as_root su postgres -c "psql -q -p $port -d template1 -v ON_ERROR_STOP=1" >/dev/null <<SQL
DO \$\$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PGBOUNCER_AUTH_ROLE') THEN
        CREATE ROLE $PGBOUNCER_AUTH_ROLE LOGIN PASSWORD '$PGBOUNCER_AUTH_ROLE';
    END IF;
END \$\$;
CREATE OR REPLACE FUNCTION public.pgbouncer_lookup(wanted text, OUT usename name, OUT passwd text)
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS \$\$ SELECT rolname, rolpassword FROM pg_catalog.pg_authid
              WHERE rolname = wanted AND rolcanlogin AND NOT rolsuper \$\$;
REVOKE ALL ON FUNCTION public.pgbouncer_lookup(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.pgbouncer_lookup(text) TO $PGBOUNCER_AUTH_ROLE;
GRANT $PGBOUNCER_AUTH_ROLE TO $role;
SQL
}

# Starts PgBouncer in transaction pooling mode in front of every database of a PostgreSQL, strict
# about startup parameters (like a default install), so the tests prove the API's statements are
# pooler-safe. With no directory and TEST_PGBOUNCER_URL given, that one is used instead.
#   start_pgbouncer [dir] [listen port] [upstream postgres://role:password@host:port] [pool size]
#                   [auth-query] [users]
# Every user gets a pool of its own of the pool size. Its server connections to a database are
# capped (max_db_connections) at the pools of the users that connect at once (1 unless given),
# plus one for the auth_user: pools of one database share the cap, and a pool that must grow when
# it is reached waits until another pool's connection goes idle and can be evicted, which under
# load takes seconds (PgBouncer's documentation says so; the soak measured an instance on a
# second user starved for 5 s with a cap equal to one pool). With `auth-query`, users other than the upstream's role are looked up in the server
# (`pgbouncer_lookup`, which install_pgbouncer_lookup puts in the databases), so their passwords
# can change, as a rotation changes them, without editing PgBouncer's auth_file (the upstream
# must be a local cluster this script started).
start_pgbouncer() {
    if [ -z "${1:-}" ] && [ -n "${TEST_PGBOUNCER_URL:-}" ]; then
        log "using the PgBouncer at TEST_PGBOUNCER_URL"
        return 0
    fi
    ensure_debs pgbouncer
    local dir=${1:-$EDGERAIL_RUN/pgbouncer} listen=${2:-$PGBOUNCER_PORT} upstream=${3:-$TEST_DATABASE_URL} pool=${4:-20}
    local auth=${5:-} users=${6:-1}
    local cap=$((pool * users))
    [ "$auth" = auth-query ] && cap=$((cap + 1))
    local host port userinfo role password
    read -r host port < <(url_host_port "$upstream")
    userinfo=${upstream#*://}
    userinfo=${userinfo%%@*}
    role=${userinfo%%:*}
    password=${userinfo#*:}
    if [ -f "$dir/pgbouncer.pid" ] && kill -0 "$(cat "$dir/pgbouncer.pid")" 2>/dev/null; then
        kill "$(cat "$dir/pgbouncer.pid")" 2>/dev/null || true
        sleep 0.5
    fi
    as_root mkdir -p "$dir"
    cat > "$dir/pgbouncer.ini" <<INI
[databases]
* = host=$host port=$port

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $listen
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = $pool
max_db_connections = $cap
# After a failed login to the server PgBouncer refuses every client for this long (15 s by
# default), long after a restarted database is back: the soak measured it as 503s.
server_login_retry = 1
max_client_conn = 1000
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
    # The role's SCRAM secret rather than its password when the server is local and lets us read it:
    # with a plain password PgBouncer derives SCRAM keys (4096 HMAC rounds) at every login, CPU a
    # cold Lambda instance would wait for at each new client connection; with
    # the server's own secret it only checks the proof, and passes the client's keys on to the
    # server when it opens a server connection.
    local secret=""
    case "$host" in
        127.0.0.1 | localhost)
            secret=$(as_root su postgres -s /bin/sh -c \
                "psql -p $port -qAtc \"SELECT rolpassword FROM pg_authid WHERE rolname = '$role'\"" 2>/dev/null) || secret=""
            ;;
    esac
    case "$secret" in
        'SCRAM-SHA-256$'*) ;;
        *) secret=$password ;;
    esac
    printf '"%s" "%s"\n' "$role" "$secret" > "$dir/userlist.txt"
    if [ "$auth" = auth-query ]; then
        install_pgbouncer_lookup "$port" "$role"
        printf 'auth_user = %s\nauth_query = SELECT usename, passwd FROM public.pgbouncer_lookup($1)\n' \
            "$PGBOUNCER_AUTH_ROLE" >> "$dir/pgbouncer.ini"
        printf '"%s" "%s"\n' "$PGBOUNCER_AUTH_ROLE" "$PGBOUNCER_AUTH_ROLE" >> "$dir/userlist.txt"
        # Its lookups are one short statement each: one server connection is its share of the cap.
        printf '\n[users]\n%s = max_user_connections=1\n' "$PGBOUNCER_AUTH_ROLE" >> "$dir/pgbouncer.ini"
    fi
    as_root chown -R postgres:postgres "$dir"
    log "starting PgBouncer on 127.0.0.1:$listen (transaction pooling, pool $pool per user, cap $cap)"
    as_root su postgres -s /bin/sh -c "pgbouncer -d -q $dir/pgbouncer.ini"
    # As the upstream's role, which PgBouncer knows: as anyone else (pg_isready's default is the
    # login user) PgBouncer would look the user up in a database of that name, and retry every
    # second for as long as it runs.
    for _ in $(seq 1 50); do
        pg_isready -q -h 127.0.0.1 -p "$listen" -U "$role" -d postgres && break
        sleep 0.2
    done
    pg_isready -h 127.0.0.1 -p "$listen" -U "$role" -d postgres >/dev/null || { echo "PgBouncer did not start" >&2; return 1; }
    export TEST_PGBOUNCER_URL="postgres://$role:$password@127.0.0.1:$listen"
}

# moto (the CloudFront API stand-in): the server at TEST_MOTO_URL when given, else `moto_server`
# from the virtualenv, started on loopback.
start_moto() {
    if [ -n "${TEST_MOTO_URL:-}" ]; then
        log "using the moto server at TEST_MOTO_URL"
        curl -fs "$TEST_MOTO_URL/moto-api/" >/dev/null || { echo "TEST_MOTO_URL does not answer" >&2; return 1; }
        return 0
    fi
    local port=${MOTO_PORT:-5005} py
    ensure_debs curl
    venv_install "moto, flask, flask_cors" moto flask flask-cors
    py=$(venv_python)
    if ! curl -fs "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1; then
        log "starting moto_server on 127.0.0.1:$port"
        mkdir -p "$EDGERAIL_RUN"
        ("$py" -m moto.server -H 127.0.0.1 -p "$port" >"$EDGERAIL_RUN/moto.log" 2>&1 &)
        for _ in $(seq 1 100); do
            curl -fs "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1 && break
            sleep 0.2
        done
    fi
    curl -fs "http://127.0.0.1:$port/moto-api/" >/dev/null || { echo "moto_server did not start" >&2; return 1; }
    export TEST_MOTO_URL="http://127.0.0.1:$port"
}

# Varnish with varnish-modules (xkey): TEST_VARNISHD when given, else the packaged varnishd. The
# tests start their own instances of it on free ports; a running Varnish service is left alone.
ensure_varnish() {
    if [ -n "${TEST_VARNISHD:-}" ]; then
        return 0
    fi
    ensure_debs varnish varnish-modules curl
    export TEST_VARNISHD
    TEST_VARNISHD=$(command -v varnishd || echo /usr/sbin/varnishd)
}

# cfn-lint, from the virtualenv.
cfn_lint() {
    venv_install cfnlint cfn-lint
    "$(venv_python)" -c "import sys; from cfnlint.runner import main; sys.argv[0] = 'cfn-lint'; sys.exit(main())" "$@"
}

# Builds the seeded template database the tests clone (CREATE DATABASE … TEMPLATE is a file copy,
# much faster than migrating and seeding per test), and a seeded SQLite file for the same purpose.
make_fixtures() {
    local api=$1
    psql "$TEST_DATABASE_URL/postgres" -qc "DROP DATABASE IF EXISTS edgerail_template WITH (FORCE)"
    psql "$TEST_DATABASE_URL/postgres" -qc "CREATE DATABASE edgerail_template"
    DATABASE_URL="$TEST_DATABASE_URL/edgerail_template" "$api" seed --demo --scale 0.1 2>/dev/null
    # With statistics, as autovacuum keeps a live database: a clone made before autovacuum came by
    # would plan its first queries on defaults (a poll of a large feed then reads every row), and
    # the tests would depend on when it came.
    psql "$TEST_DATABASE_URL/edgerail_template" -qc "ANALYZE"
    mkdir -p "$EDGERAIL_RUN"
    rm -f "$EDGERAIL_RUN/template.sqlite"*
    DATABASE_URL="sqlite://$EDGERAIL_RUN/template.sqlite" "$api" seed --demo --scale 0.1 2>/dev/null
    export TEST_PG_TEMPLATE=edgerail_template
    export TEST_SQLITE_TEMPLATE="$EDGERAIL_RUN/template.sqlite"
}
