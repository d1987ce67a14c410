#!/bin/sh
# Start the local PostgreSQL and Redis the suite uses, if they are not already answering.
set -eu
if command -v pg_isready >/dev/null && ! pg_isready -h 127.0.0.1 -q; then
    if [ "$(id -u)" = 0 ] && command -v pg_ctlcluster >/dev/null; then
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    fi
fi
if command -v redis-cli >/dev/null && ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi
for i in 1 2 3 4 5 6 7 8 9 10; do
    pg_ok=1; redis_ok=1
    pg_isready -h 127.0.0.1 -q 2>/dev/null || pg_ok=0
    redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 || redis_ok=0
    [ $pg_ok = 1 ] && [ $redis_ok = 1 ] && exit 0
    sleep 1
done
echo "services: PostgreSQL ready=$pg_ok Redis ready=$redis_ok" >&2
