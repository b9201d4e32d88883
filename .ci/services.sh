#!/usr/bin/env bash
# Installs and starts what the test suite talks to. Idempotent; safe to run by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

# The real OpenID provider (npm oidc-provider), run by the tests themselves.
if [ -f tests/oidc/package.json ]; then
  command -v node >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm; }
  npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error
fi
