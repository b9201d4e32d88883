#!/usr/bin/env bash
# Installs and starts what the test suite talks to, on 127.0.0.1 only. Idempotent.
# Source it (`. .ci/services.sh`) to get TEST_POSTGRES_URL and TEST_REDIS_URL exported.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# PostgreSQL (Debian package) on 127.0.0.1:55432, a throwaway cluster under /tmp.
apt_install postgresql openssl curl
TEST_POSTGRES_URL=$(.ci/pg_up.sh | tail -n 1)
export TEST_POSTGRES_URL

# Redis (Debian package) on 127.0.0.1:56379 for the shared rate limits; the tests that stop
# or freeze Redis start their own redis-server from the same package on free ports.
apt_install redis-server
TEST_REDIS_URL=$(.ci/redis_up.sh | tail -n 1)
export TEST_REDIS_URL

# openapi-spec-validator (PyPI) judges the generated OpenAPI 3.1 document.
python3 -m pip install --quiet --disable-pip-version-check openapi-spec-validator

# The real OpenID provider (npm oidc-provider), started by the tests themselves.
if [ -f tests/oidc/package.json ]; then
  command -v node >/dev/null || apt_install nodejs npm
  npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error
fi

# Headless Chromium (Debian package) for the browser login test, driven by playwright-core
# from npm, which downloads no browser of its own.
apt_install chromium

# wrk, for the reload-under-load test (and bench/run).
apt_install wrk
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
