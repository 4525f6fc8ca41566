#!/usr/bin/env bash
# The production-like tests read and write a Redis online store on 127.0.0.1:6379. Start one
# if it is installed and not running; say so plainly if there is none. (The embedded default,
# `make demo`, needs no server at all.)
set -u
if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  exit 0
fi
if ! command -v redis-server >/dev/null; then
  echo "note: no Redis on 127.0.0.1:6379 and redis-server is not installed;" \
       "the Redis online-store test will fail (apt-get install redis-server)" >&2
  exit 0
fi
redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
  --logfile /tmp/recsys-redis.log
for _ in $(seq 1 20); do
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && exit 0
  sleep 0.5
done
echo "note: started redis-server but it does not answer; see /tmp/recsys-redis.log" >&2
