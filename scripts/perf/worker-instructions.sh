#!/usr/bin/env bash
# Counts what the worker costs for one merged event, in figures that repeat from run to run on
# a shared machine where its rate does not (docs/performance.md): the instructions the worker
# process executes (valgrind's callgrind), and the Postgres work its statements cause (buffer
# pages touched, rows written, WAL bytes, from Postgres' own statistics).
#
#   cargo build --release --bins
#   scripts/perf/worker-instructions.sh                      # this build, 10,000 webhooks
#   scripts/perf/worker-instructions.sh before/target/release 10000
#
# The real ingress (from target/release) takes COUNT valid Starshipit webhooks from
# `waybill-bench loadgen` with no worker running, leaving a backlog. The worker (from the
# directory given) then runs under callgrind until the backlog is merged and its changes are
# published, and once more, idle, for as long. The difference, divided by the events stored,
# is printed on stdout with Postgres' figures per event. valgrind's CPU has no SHA extensions,
# so the worker's SHA-256 (event ids of polled events only; none here) would be overcounted.
#
# Uses the server of DATABASE_URL (default: the local one) with a scratch database
# `waybill_wcount`, and the broker of AMQP_URL with the queue prefix `perf-wcount.`; both are
# removed at the end (the queues with rabbitmqctl, which this script needs). With PROFILE_OUT
# set, the draining run's callgrind profile is kept there, for `callgrind_annotate --inclusive=yes`.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin_dir="${1:-target/release}"
count="${2:-10000}"
for tool in valgrind rabbitmqctl psql; do
  command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 1; }
done
for tool in waybill waybill-bench waybill-ingress; do
  [ -x "target/release/$tool" ] || { echo "build first: cargo build --release --bins" >&2; exit 1; }
done
[ -x "$bin_dir/waybill-worker" ] || { echo "no waybill-worker in $bin_dir" >&2; exit 1; }

# shellcheck source=scripts/perf/scratch.sh
. scripts/perf/scratch.sh
export WAYBILL_INGRESS_ADDR="127.0.0.1:18092"
export WAYBILL_WORKER_ADDR="127.0.0.1:18093"
scratch_begin waybill_wcount perf-wcount.
prefix="$scratch_prefix"

sql() { psql -qAt "$DATABASE_URL" -c "$1"; }
depth() { rabbitmqctl -q list_queues name messages </dev/null | awk -v q="${prefix}waybill.webhooks" '$1 == q { print $2 }'; }
# Postgres' counters of the scratch database and the server's WAL: pages touched, rows
# inserted, updated and deleted, WAL bytes.
pg_counters() {
  psql -qAt -F ' ' "$scratch_server/postgres" -c \
    "select d.blks_hit + d.blks_read, d.tup_inserted, d.tup_updated, d.tup_deleted, w.wal_bytes::bigint
     from pg_stat_database d, pg_stat_wal w where d.datname = '$scratch_database'"
}

echo "backlog: $count webhooks through the ingress, no worker running" >&2
target/release/waybill-ingress >"$scratch/ingress.log" 2>&1 &
ingress=$!
wait_healthy "$WAYBILL_INGRESS_ADDR" || { cat "$scratch/ingress.log" >&2; exit 1; }
target/release/waybill-bench loadgen --ingress "http://$WAYBILL_INGRESS_ADDR" \
  --sources starshipit --count "$count" --rate 2000 --concurrency 16 \
  --duplicates 0 --invalid 0 --out-of-order 0 --no-drain --quiet >/dev/null
kill -TERM "$ingress"
wait "$ingress" || true

# One worker run under callgrind: until the backlog is merged and published (`loaded`), or for
# `$2` seconds (`idle`). Prints the instructions and the seconds it ran.
run_worker() {
  local out="$scratch/callgrind.$1" started
  started=$(date +%s)
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin_dir/waybill-worker" \
    >"$scratch/worker.log" 2>&1 &
  local worker=$!
  wait_healthy "$WAYBILL_WORKER_ADDR" || { cat "$scratch/worker.log" >&2; exit 1; }
  if [ "$1" = loaded ]; then
    local quiet=0
    while [ "$quiet" -lt 3 ]; do
      sleep 1
      if [ "$(depth)" = 0 ] && [ "$(sql 'select count(*) from outbox_to_publish')" = 0 ]; then
        quiet=$((quiet + 1))
      else
        quiet=0
      fi
    done
  else
    sleep "$2"
  fi
  kill -TERM "$worker"
  wait "$worker" || true
  echo "$(sed -n 's/^summary: //p' "$out") $(($(date +%s) - started))"
}

echo "the worker from $bin_dir under callgrind: draining, then idle as long" >&2
read -r hits0 ins0 upd0 del0 wal0 < <(pg_counters)
read -r loaded seconds < <(run_worker loaded)
sleep 2 # Postgres publishes a backend's statistics when it ends
read -r hits1 ins1 upd1 del1 wal1 < <(pg_counters)
if [ -n "${PROFILE_OUT:-}" ]; then cp "$scratch/callgrind.loaded" "$PROFILE_OUT"; fi
read -r idle _ < <(run_worker idle "$seconds")
sleep 2
read -r hits2 ins2 upd2 del2 wal2 < <(pg_counters)

events=$(sql 'select count(*) from tracking_events')
[ "$events" -gt 0 ] || { echo "no events were stored" >&2; exit 1; }
per_event() { awk -v a="$1" -v b="$2" -v c="$3" -v d="$4" -v n="$events" 'BEGIN { printf "%.2f", (a - b - (c - d)) / n }'; }
echo "events merged: $events ($count webhooks; loaded run $loaded instructions in ${seconds}s, idle run $idle)"
echo "worker instructions an event: $(( (loaded - idle) / events ))"
echo "changes: $(sql 'select count(*) from outbox'), their payloads $(sql 'select avg(octet_length(payload::text))::int from outbox') bytes on average (as Postgres prints jsonb)"
echo "postgres an event: $(per_event "$hits1" "$hits0" "$hits2" "$hits1") pages touched," \
  "$(per_event "$ins1" "$ins0" "$ins2" "$ins1") rows inserted," \
  "$(per_event "$upd1" "$upd0" "$upd2" "$upd1") updated," \
  "$(per_event "$del1" "$del0" "$del2" "$del1") deleted," \
  "$(per_event "$wal1" "$wal0" "$wal2" "$wal1") WAL bytes"
