#!/usr/bin/env bash
# Makes sure PostgreSQL and RabbitMQ answer on 127.0.0.1 (5432, 5672). Starts them when they are
# installed but stopped (Debian packaging: pg_ctlcluster, rabbitmq-server); fails with a clear
# message when they are not installed. Sourced by quickstart.sh and test.sh.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port, name, seconds
  local i
  for ((i = 0; i < $3 * 2; i++)); do
    port_open "$1" && return 0
    sleep 0.5
  done
  echo "error: $2 did not come up on 127.0.0.1:$1 within $3 s" >&2
  return 1
}

ensure_postgres() {
  port_open 5432 && return 0
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "starting PostgreSQL..."
    local version
    for version in $(ls /etc/postgresql); do
      pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    done
  elif command -v pg_ctl >/dev/null 2>&1 && [ -n "${PGDATA:-}" ]; then
    pg_ctl -D "$PGDATA" -l "$PGDATA/server.log" start
  else
    echo "error: PostgreSQL is not running on 127.0.0.1:5432 and is not installed here." >&2
    echo "       Install it (e.g. apt-get install postgresql) or use 'docker compose up'." >&2
    return 1
  fi
  wait_port 5432 PostgreSQL 60
}

ensure_rabbitmq() {
  port_open 5672 && return 0
  if command -v rabbitmq-server >/dev/null 2>&1; then
    echo "starting RabbitMQ..."
    rabbitmq-server -detached || true
  else
    echo "error: RabbitMQ is not running on 127.0.0.1:5672 and is not installed here." >&2
    echo "       Install it (e.g. apt-get install rabbitmq-server) or use 'docker compose up'." >&2
    return 1
  fi
  wait_port 5672 RabbitMQ 120
}

ensure_services() {
  ensure_postgres
  ensure_rabbitmq
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  ensure_services
fi
