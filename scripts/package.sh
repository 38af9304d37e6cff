#!/usr/bin/env bash
# The deploy build, proven here: runs docs/deploy.md's `sam build` exactly as documented (with what the
# committed samconfig.toml supplies), then checks what it made:
#
#   - every function's bootstrap is an aarch64 ELF (Lambda runs them on arm64, Graviton);
#   - each function's zip (`zip -9`, what `sam deploy` uploads) is within its size budget;
#   - the arm64 api bootstrap, run under qemu-aarch64 against a local Lambda Runtime API, answers
#     Function URL events as CloudFront forwards them with a 200 and the caching headers;
#   - the same bootstrap, given no database, says it has no SQLite (the Lambda build leaves the
#     embedded default out) instead of creating a file.
#
#   ./scripts/package.sh
#
# Installs what is missing: aws-sam-cli and cargo-lambda (with zig) into the Python virtualenv,
# the aarch64-unknown-linux-gnu Rust target, qemu-user and the arm64 C library from Debian. Not part
# of ./scripts/test.sh: a clean arm64 build with the deploy profile takes about 20 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

API_BUDGET=$((3 * 1024 * 1024))
WARMER_BUDGET=$((4 * 1024 * 1024))

ensure_debs qemu-user libc6-arm64-cross zip curl
venv_install samcli aws-sam-cli
[ -x "$EDGERAIL_VENV/bin/cargo-lambda" ] || venv_install cargo_lambda cargo-lambda
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu
export PATH="$EDGERAIL_VENV/bin:$PATH"
log "$(sam --version), $(cargo lambda --version)"

log "sam build (as docs/deploy.md says)"
started=$(date +%s)
sam build
log "sam build took $(( $(date +%s) - started )) s"

status=0
out=target/package
rm -rf "$out" && mkdir -p "$out"
for function in ApiFunction:api:$API_BUDGET WarmerFunction:warmer:$WARMER_BUDGET; do
    IFS=: read -r resource name budget <<<"$function"
    bootstrap=.aws-sam/build/$resource/bootstrap
    [ -f "$bootstrap" ] || { echo "✗ $resource: no bootstrap at $bootstrap" >&2; exit 1; }
    # ELF header: class 2 (64-bit) at byte 4, machine 183 (EM_AARCH64) at bytes 18-19.
    class=$(od -An -tu1 -j4 -N1 "$bootstrap" | tr -d ' ')
    machine=$(od -An -tu2 -j18 -N2 "$bootstrap" | tr -d ' ')
    if [ "$(head -c4 "$bootstrap" | od -An -c | tr -d ' ')" != "177ELF" ] || [ "$class" != 2 ] || [ "$machine" != 183 ]; then
        echo "✗ $resource: bootstrap is not a 64-bit aarch64 ELF (class $class, machine $machine)" >&2
        status=1
    fi
    (cd "$(dirname "$bootstrap")" && rm -f "$OLDPWD/$out/$name.zip" && zip -q -9 "$OLDPWD/$out/$name.zip" bootstrap)
    bytes=$(stat -c %s "$bootstrap")
    zipped=$(stat -c %s "$out/$name.zip")
    mark="✓"
    if [ "$zipped" -gt "$budget" ]; then mark="✗"; status=1; fi
    awk -v m="$mark" -v n="$name" -v b="$bytes" -v z="$zipped" -v budget="$budget" \
        'BEGIN { printf "%s %s: aarch64 bootstrap %d bytes, zip -9 %d bytes (%.2f MiB; budget %.0f MiB)\n", m, n, b, z, z / 1048576, budget / 1048576 }' \
        | tee -a "$out/sizes.txt"
done

log "the arm64 api under qemu-aarch64, against a local Runtime API"
start_postgres
psql "$TEST_DATABASE_URL/postgres" -qc "DROP DATABASE IF EXISTS edgerail_package WITH (FORCE)"
psql "$TEST_DATABASE_URL/postgres" -qc "CREATE DATABASE edgerail_package"
cargo build --quiet -p api -p bench
DATABASE_URL="$TEST_DATABASE_URL/edgerail_package" target/debug/api seed --demo --scale 0.1 2>/dev/null
target/debug/bench invoke --runner qemu-aarch64 --runner-arg -L --runner-arg /usr/aarch64-linux-gnu \
    --bootstrap .aws-sam/build/ApiFunction/bootstrap --database-url "$TEST_DATABASE_URL/edgerail_package" \
    --path /v1/lines --path /v1/formations/10701F --path /v1/operations/today --path /v1/lines \
    || status=1

log "the arm64 api without a database URL: the Lambda build has no embedded SQLite to fall back on"
if out=$(env -i PATH="$PATH" QEMU_LD_PREFIX=/usr/aarch64-linux-gnu qemu-aarch64 .aws-sam/build/ApiFunction/bootstrap 2>&1); then
    echo "✗ the api started without a database" >&2
    status=1
elif grep -q "no SQLite backend" <<<"$out"; then
    echo "✓ refused: $(grep -o 'this build has no SQLite backend[^"]*' <<<"$out" | head -1)"
else
    echo "✗ unexpected failure: $out" >&2
    status=1
fi
exit $status
