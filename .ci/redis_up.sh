#!/bin/bash
# Idempotent Redis (Debian package redis-server) on 127.0.0.1 only, for the test suite; prints
# its URL. Root is fine for redis. A password is required (requirepass), so the suite's URL
# also proves that NestFlux authenticates; most Redis tests start private servers of their own
# (tests/it/redis_server.rs) so they can stop and freeze them.
# Env: REDIS_PORT (56379), REDIS_DIR (/tmp/nestflux-redis), REDIS_PASS (nestflux-test).
# Stop: redis-cli -h 127.0.0.1 -p $REDIS_PORT -a $REDIS_PASS shutdown nosave
set -euo pipefail
REDIS_PORT=${REDIS_PORT:-56379}; DIR=${REDIS_DIR:-/tmp/nestflux-redis}; REDIS_PASS=${REDIS_PASS:-nestflux-test}
mkdir -p "$DIR"
ping() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" -a "$REDIS_PASS" --no-auth-warning ping 2>/dev/null | grep -q PONG; }
if ! ping; then
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes --daemonize yes \
    --dir "$DIR" --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log" --save '' --appendonly no \
    --requirepass "$REDIS_PASS"
  for _ in $(seq 50); do ping && break; sleep 0.1; done
fi
ping
echo "redis://:$REDIS_PASS@127.0.0.1:$REDIS_PORT/0"
