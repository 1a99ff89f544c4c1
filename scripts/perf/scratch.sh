# Sourced by the scripts in scripts/perf that run Waybill's binaries on a scratch database and
# queue prefix: `scratch_begin DATABASE PREFIX` sets DATABASE_URL, WAYBILL_BUS_PREFIX and the
# config for them, creates and migrates the database, declares the topology, makes a temporary
# directory `$scratch`, and removes all of it (the queues with rabbitmqctl, when it is installed)
# when the script exits. `wait_healthy ADDR` waits for a binary's /healthz.

scratch_begin() {
  scratch_server="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
  scratch_server="${scratch_server%/*}"
  scratch_database="$1"
  scratch_prefix="$2"
  export WAYBILL_CONFIG="${WAYBILL_CONFIG:-deploy/waybill.example.toml}"
  export DATABASE_URL="$scratch_server/$scratch_database"
  export WAYBILL_BUS_PREFIX="$scratch_prefix"
  export RUST_LOG=warn
  scratch=$(mktemp -d)
  trap scratch_end EXIT
  psql -q "$scratch_server/postgres" -c "create database $scratch_database" >/dev/null 2>&1 || true
  target/release/waybill migrate >&2
  target/release/waybill topology >&2
}

scratch_end() {
  psql -q "$scratch_server/postgres" -c "drop database if exists $scratch_database with (force)" \
    >/dev/null 2>&1 || true
  if command -v rabbitmqctl >/dev/null; then
    # Listed first: rabbitmqctl reads standard input, which would swallow the rest of a piped list.
    local queues
    queues=$(rabbitmqctl -q list_queues name 2>/dev/null | grep "^${scratch_prefix//./\\.}" || true)
    for queue in $queues; do
      rabbitmqctl -q delete_queue "$queue" </dev/null >/dev/null 2>&1 || true
    done
  fi
  rm -rf "$scratch"
}

wait_healthy() {
  for _ in $(seq 1 240); do
    curl -sf "http://$1/healthz" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  return 1
}
