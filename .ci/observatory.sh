#!/usr/bin/env bash
# Mozilla HTTP Observatory (npm @mdn/mdn-http-observatory, pinned in .ci/observatory/) scans
# a reference-like NestFlux service served over TLS with a throwaway test CA on 127.0.0.1,
# and fails unless the grade is A+ (score >= 120, or $MIN_SCORE).
#
# Usage: .ci/observatory.sh [path/to/nestflux]   (default: target/debug/nestflux, built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MIN_SCORE=${MIN_SCORE:-120}
BIN=${1:-$ROOT/target/debug/nestflux}
[ -x "$BIN" ] || cargo build --locked --bin nestflux

OBS=$ROOT/.ci/observatory
if [ ! -d "$OBS/node_modules/@mdn/mdn-http-observatory" ]; then
  # Its install scripts download the HSTS preload list and the TLD list from the internet.
  (cd "$OBS" && npm ci --ignore-scripts --no-audit --no-fund)
fi
PRELOAD=$OBS/node_modules/@mdn/mdn-http-observatory/conf/hsts-preload.json
[ -s "$PRELOAD" ] || echo '{}' > "$PRELOAD"

WORK=$(mktemp -d)
SERVER_PID=
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

# A test CA and a server certificate for 127.0.0.1 signed by it.
cd "$WORK"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=NestFlux CI test CA" -keyout ca.key -out ca.pem \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/CN=127.0.0.1" -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > ext.cnf
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
  -extfile ext.cnf -out server.pem 2>/dev/null

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# The reference service (the notes fixture with an encrypted field, CORS, rate limits, the
# reference CSP) minus the identity provider, plus a public `GET /`: the Observatory scans only `/`.
{
cat <<TOML
[server]
bind = "127.0.0.1:$PORT"
body_limit = "1MiB"
request_timeout = "15s"

[server.tls]
cert = "server.pem"
key = "server.key"

[database]
url = "sqlite://nestflux.db"

[headers]
content_security_policy = "default-src 'self'; frame-ancestors 'none'"

[cors]
origins = ["http://localhost:5173"]
methods = ["GET", "POST", "PATCH", "DELETE"]
headers = ["authorization", "content-type"]
credentials = true
max_age = "10m"

[rate_limits.global]
key = "ip"
per_second = 100
burst = 200

[[routes]]
method = "GET"
path = "/"
action = "health"
public = true

[[routes]]
method = "GET"
path = "/health"
action = "health"
public = true
TOML
# The shared notes fixture, its `secret` encrypted at rest.
sed 's/^schema = "Note"$/&\nencrypted = ["secret"]/' "$ROOT/tests/fixtures/notes.toml"
} > nestflux.toml
grep -qx 'encrypted = \["secret"\]' nestflux.toml || { echo "observatory: the notes fixture changed shape"; exit 1; }

KEY=$("$BIN" keys generate)
NESTFLUX_ENCRYPTION__KEYS=$KEY "$BIN" serve --config nestflux.toml > server.log 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
  curl -fsS --cacert ca.pem "https://127.0.0.1:$PORT/" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat server.log; exit 1; }
  sleep 0.2
done

NODE_EXTRA_CA_CERTS=$WORK/ca.pem node "$OBS/node_modules/@mdn/mdn-http-observatory/src/scan.js" "127.0.0.1:$PORT" > scan.json \
  || { cat scan.json; cat server.log; exit 2; }
python3 - scan.json "$MIN_SCORE" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); s = d["scan"]
print(f'observatory: grade={s.get("grade")} score={s.get("score")} passed={s.get("testsPassed")}/{s.get("testsQuantity")}')
for k, t in d.get("tests", {}).items():
    print(f'  {"PASS" if t["pass"] else "FAIL"} {k:32} {t["result"]:50} {t["scoreModifier"]:+d}')
ok = s.get("grade") == "A+" and s.get("score", 0) >= int(sys.argv[2])
sys.exit(0 if ok else 1)
PY
