#!/usr/bin/env bash
# Schemathesis (PyPI, 4.x) against the reference service: the root nestflux.toml served on
# 127.0.0.1 with SQLite in a temp dir, the development issuer, generous rate limits (set by
# environment overrides, the file is not edited) and an admin token from `nestflux token`.
# All phases (examples, coverage, fuzzing, stateful), every check, bounded in examples and
# wall-clock time; exits non-zero on any failure.
#
# Usage: .ci/schemathesis.sh [path/to/nestflux]   (default: target/debug/nestflux, built if missing)
#   MAX_EXAMPLES (default 100) and MAX_SECONDS (default 600) bound the run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${1:-$ROOT/target/debug/nestflux}
MAX_EXAMPLES=${MAX_EXAMPLES:-100}
MAX_SECONDS=${MAX_SECONDS:-600}
[ -x "$BIN" ] || cargo build --locked --bin nestflux

if ! schemathesis --version 2>/dev/null | grep -q 'version 4\.'; then
  python3 -m pip install --quiet 'schemathesis==4.*'
fi
echo "$(schemathesis --version)"

WORK=$(mktemp -d)
SERVER_PID=
IDP_PID=
cleanup() {
  for pid in $SERVER_PID $IDP_PID; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# Every variable is a NESTFLUX_* override of the reference file (README: configuration layers).
export NESTFLUX_CONFIG=$ROOT/nestflux.toml
export NESTFLUX_SERVER__BIND=127.0.0.1:$PORT
export NESTFLUX_DATABASE__URL=sqlite://$WORK/nestflux.db
export NESTFLUX_ENCRYPTION__KEYS=$("$BIN" keys generate)
# The reference file's identity provider, for real: the oidc-provider the tests use
# (tests/oidc), on a free port it binds itself (PORT=0; the issuer is in its ready line), so
# browser login answers as in production (302 to the provider) instead of 503. The API itself
# is called with a development token.
[ -d tests/oidc/node_modules/oidc-provider ] || npm ci --prefix tests/oidc --no-audit --no-fund
# PORT=0 comes last: an assignment before a command is seen by those after it.
RP_REDIRECT=http://127.0.0.1:$PORT/auth/callback KEYS_FILE=$WORK/idp-keys.json PORT=0 \
  node tests/oidc/provider.mjs >"$WORK/idp.log" 2>&1 &
IDP_PID=$!
for _ in $(seq 1 300); do grep -q ' ready$' "$WORK/idp.log" 2>/dev/null && break; sleep 0.2; done
grep -q ' ready$' "$WORK/idp.log" || { echo "oidc-provider did not start in 60 s; it printed:"; cat "$WORK/idp.log"; exit 1; }
NESTFLUX_AUTH__ISSUER=$(sed -n 's/^oidc-provider \(http[^ ]*\) ready$/\1/p' "$WORK/idp.log" | head -n 1)
export NESTFLUX_AUTH__ISSUER
export NESTFLUX_AUTH__SESSION__CLIENT_ID=nestflux-web
export NESTFLUX_AUTH__SESSION__CLIENT_SECRET=web-secret
export NESTFLUX_AUTH__SESSION__REDIRECT_URL=http://127.0.0.1:$PORT/auth/callback
# Generous limits: schemathesis is one client sending thousands of requests, and its
# ignored_auth check sends many bad tokens (which the auth_failures budget would stop).
export NESTFLUX_RATE_LIMITS__GLOBAL__PER_SECOND=100000
export NESTFLUX_RATE_LIMITS__GLOBAL__BURST=100000
export NESTFLUX_RATE_LIMITS__WRITES__PER_MINUTE=1000000
export NESTFLUX_RATE_LIMITS__WRITES__BURST=100000
export NESTFLUX_RATE_LIMITS__AUTH_FAILURES__KEY=ip
export NESTFLUX_RATE_LIMITS__AUTH_FAILURES__PER_SECOND=100000
export NESTFLUX_RATE_LIMITS__AUTH_FAILURES__BURST=100000
export NESTFLUX_LOG=warn,nestflux::server=info

"$BIN" serve >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log"; exit 1; }
  sleep 0.2
done
TOKEN=$("$BIN" token --sub ci-admin --role admin --ttl 2h)

# The cursor allowance and the check that keeps it narrow (.ci/schemathesis.toml says why).
export SCHEMATHESIS_HOOKS=$ROOT/.ci/schemathesis_hooks.py
# Run from the temp dir: schemathesis keeps its replay store (.schemathesis/) in the cwd.
cd "$WORK"
# One worker: with two, hypothesis parses lambda sources (`ast.parse`) on two threads at
# once, and CPython 3.11 before the fix of gh-106905 then fails now and then with
# "SystemError: AST constructor recursion depth mismatch" (seen once in nine CI runs, on
# GET /api/audit, with every generated case passing): a failure of the tool, not of NestFlux.
set -x
timeout --signal=INT --kill-after=30 "$MAX_SECONDS" \
  schemathesis --config-file "$ROOT/.ci/schemathesis.toml" run "http://127.0.0.1:$PORT/openapi.json" \
    --phases examples,coverage,fuzzing,stateful \
    --checks all \
    --max-examples "$MAX_EXAMPLES" \
    --seed 1 \
    --header "Authorization: Bearer $TOKEN" \
    --request-timeout 20 \
    --max-redirects 0 \
    --workers 1 \
    --report junit --report-dir "$WORK/report" \
    --warnings off \
  && status=0 || status=$?
set +x
if [ "$status" -ne 0 ]; then
  echo "schemathesis: failures (exit $status); server log tail:"
  tail -n 40 "$WORK/server.log"
fi
exit "$status"
