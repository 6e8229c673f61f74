#!/usr/bin/env bash
# Installs (from Debian) and starts what the test suite needs on this machine, idempotently:
# PostgreSQL 15 on 127.0.0.1:5432 (trust on loopback, for tests only), Redis on 127.0.0.1:6379,
# PgBouncer, Chromium and wrk. Run by `make test`; `make serve` needs none of it.
set -euo pipefail

need=()
command -v pg_ctlcluster >/dev/null && ls /usr/lib/postgresql/15/bin/postgres >/dev/null 2>&1 || need+=(postgresql-15)
command -v redis-server >/dev/null || need+=(redis-server)
command -v pgbouncer >/dev/null || test -x /usr/sbin/pgbouncer || need+=(pgbouncer)
command -v chromium >/dev/null || need+=(chromium)
command -v wrk >/dev/null || need+=(wrk)
command -v jq >/dev/null || need+=(jq)
if [ ${#need[@]} -gt 0 ]; then
  echo "machine: installing ${need[*]} from Debian"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# PostgreSQL: the packaged cluster, with trust for loopback TCP (the tests connect as postgres without a password).
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  [ -d /etc/postgresql/15/main ] || pg_createcluster 15 main >/dev/null
  hba=/etc/postgresql/15/main/pg_hba.conf
  if ! grep -q '^# widgets-tests' "$hba"; then
    { echo '# widgets-tests: trust on loopback for the test suite'
      echo 'host all all 127.0.0.1/32 trust'
      echo 'host all all ::1/128 trust'
      cat "$hba"; } > "$hba.new" && mv "$hba.new" "$hba" && chown postgres:postgres "$hba"
  fi
  # Every wiring of every suite, a PgBouncer and the projection processes the tests start: more than the default 100.
  mkdir -p /etc/postgresql/15/main/conf.d
  echo "max_connections = 300" > /etc/postgresql/15/main/conf.d/widgets-tests.conf
  pg_ctlcluster --skip-systemctl-redirect 15 main start
fi

redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || \
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null

for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p 5432 && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "machine: PostgreSQL or Redis did not start" >&2
exit 1
