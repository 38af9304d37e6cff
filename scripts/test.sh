#!/usr/bin/env bash
# The test command (README, CI): installs what is missing, starts the services the tests need on
# loopback (PostgreSQL, PgBouncer, moto_server for the CloudFront API, Varnish for the local edge)
# unless they are given (see scripts/services.sh), then runs lints, every test of the workspace,
# and a short soak (scripts/soak.sh).
#
#   ./scripts/test.sh                 everything
#   EDGERAIL_SKIP_LINT=1 ./scripts/test.sh [nextest filter…]   faster inner loop
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install --locked cargo-nextest >/dev/null
fi

# On a cluster of its own, PgBouncer looks other roles up in the server (auth-query): a rotation
# test logs in through it as a role of its own whose password changes.
pgbouncer_auth=auth-query
if [ -n "${TEST_DATABASE_URL:-}" ]; then pgbouncer_auth=""; fi
start_postgres
start_pgbouncer "" "" "" "" "$pgbouncer_auth"
ensure_varnish
start_moto
# The HTTPS secret test makes a throwaway certificate authority with the openssl command.
ensure_debs openssl

if [ -z "${EDGERAIL_SKIP_LINT:-}" ]; then
    log "cargo fmt --check"
    cargo fmt --all -- --check
    log "cargo clippy"
    cargo clippy --workspace --all-targets --quiet -- -D warnings
fi

log "cfn-lint template.yaml"
cfn_lint template.yaml

log "building"
# Bins and test targets in one invocation: with the test targets in it, dev-dependencies unify
# features the same way the test run does, so the dependencies are not compiled a second time.
cargo build --workspace --bins --tests --quiet
make_fixtures target/debug/api

log "running tests"
# The SQLite copies each test makes (8 MB each) are left for inspection until the next run.
rm -rf "$EDGERAIL_RUN/sqlite-tests"
export EDGERAIL_RUN
if [ $# -eq 0 ]; then
    cargo test -p cache-policy -p api --doc --quiet
fi
# The service-backed tests are #[ignore]d for a plain `cargo test` (which runs only what needs
# nothing); here the services are up, so every test runs, and a missing one fails.
cargo nextest run --workspace --run-ignored all --no-fail-fast "$@"

if [ $# -eq 0 ]; then
    # The soak (soak/): a Lambda-shaped fleet under seeded faults, every read checked
    # against the commit history; then the same checker against a setup broken on purpose, which it
    # must catch. Run after the tests, alone: it restarts its own PostgreSQL and PgBouncer.
    # 160 s: one fault of every kind with seed 1 (a test in soak/src/faults.rs, SHORT_RUN, checks it).
    log "soak: 160 s, seed 1 (every fault kind, every read checked)"
    scripts/soak.sh --seed 1 --duration 160s
    log "soak, broken on purpose (INVALIDATOR=none): the checker must report violations"
    scripts/soak.sh --out "$EDGERAIL_RUN/soak-broken.json" --broken no-invalidation --no-faults --duration 30s
fi
