#!/usr/bin/env bash
# Make sure the real PostgreSQL (127.0.0.1:5432, database `test`) and Redis
# (127.0.0.1:6379) that the tests use are running; start (or install) them if not.
# Also installs the tools tests/deploy runs (kubectl, prometheus, promtool).
# Redis must be durable (appendonly yes, appendfsync always): the dedup store refuses a
# Redis that may forget what it acknowledged (docs/storage.md, "Durability").
set -euo pipefail
need_apt=()
command -v pg_ctlcluster >/dev/null || need_apt+=(postgresql)
command -v redis-server >/dev/null || need_apt+=(redis-server)
# Tools of tests/deploy: kubectl kustomize, and a real Prometheus with promtool.
command -v kubectl >/dev/null || need_apt+=(kubernetes-client)
{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } || need_apt+=(prometheus)
# systemd-analyze checks deploy/systemd/flk-agent.service (tests/agent/test_systemd.py).
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  mkdir -p /tmp/flk-redis-6379
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" \
    --appendonly yes --appendfsync always --dir /tmp/flk-redis-6379
fi
for _ in $(seq 1 60); do
  if pg_isready -q -h 127.0.0.1 -p 5432 && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    # The tests use database `test`; create it when a fresh cluster lacks it.
    psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='test'" 2>/dev/null | grep -q 1 \
      || createdb -h 127.0.0.1 -U postgres test 2>/dev/null || true
    # A Redis that was already running (an older services.sh started it with
    # --appendonly no) is switched over live; CI reuses this machine's Redis.
    for setting in "appendonly yes" "appendfsync always"; do
      # shellcheck disable=SC2086  # two words on purpose: name and value
      if [ "$(redis-cli -h 127.0.0.1 -p 6379 CONFIG SET $setting)" != OK ]; then
        echo "services: redis refused CONFIG SET $setting" >&2; exit 1
      fi
    done
    echo "services: postgresql and redis are up"; exit 0
  fi
  sleep 1
done
echo "services: postgresql or redis did not come up" >&2
exit 1
