#!/usr/bin/env bash
# The ingress alone at full speed, then the worker alone draining what it left: the CPU each
# and RabbitMQ spend per accepted request and per merged event (and Postgres per event), to
# compare two builds run after one another (docs/performance.md). Each run: a fresh database
# (`waybill_drain`, dropped first), the ingress at full speed for N seconds under
# `waybill-bench loadgen` (one Starshipit source, 64 connections) with no worker running, then
# the worker started alone, timed until every event is stored and every change published.
#
#   scripts/perf/worker-drain.sh target/release 8          # binaries' directory, seconds of load
#   for i in 1 2 3; do for b in before after; do scripts/perf/worker-drain.sh "bins/$b" 8; done; done
#
# Reads WAYBILL_CONFIG (default deploy/waybill.example.toml); uses the local Postgres and
# RabbitMQ, the queue prefix `drain.` and ports 18080/18081. Prints two lines a run on stdout.
set -euo pipefail
bin="${1:?the directory of the waybill binaries}"
seconds="${2:-8}"
admin="postgres://postgres@127.0.0.1:5432/postgres"
export WAYBILL_CONFIG="${WAYBILL_CONFIG:-deploy/waybill.example.toml}"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/waybill_drain"
export WAYBILL_BUS_PREFIX=drain.
export WAYBILL_INGRESS_ADDR=127.0.0.1:18080 WAYBILL_WORKER_ADDR=127.0.0.1:18081
export RUST_LOG=warn
hz=$(getconf CLK_TCK)

PGOPTIONS=--client-min-messages=warning psql -XAtq "$admin" -c "drop database if exists waybill_drain with (force)" -c "create database waybill_drain"
"$bin/waybill" migrate >/dev/null 2>&1 || { echo "waybill migrate failed" >&2; exit 1; }
"$bin/waybill" topology >/dev/null 2>&1 || { echo "waybill topology failed" >&2; exit 1; }
"$bin/waybill-ingress" 2>/dev/null &
ingress=$!
sleep 1
ticks() { local sum=0 pid; for pid in "$@"; do
  sum=$((sum + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0))); done; echo "$sum"; }
mq0=$(ticks $(pgrep beam.smp))
ledger=$("$bin/waybill-bench" loadgen --sources starshipit --duration "${seconds}s" --concurrency 64 \
  --no-drain --json 2>/dev/null)
own=$(ticks "$ingress"); mq1=$(ticks $(pgrep beam.smp))
kill "$ingress"
wait "$ingress" 2>/dev/null || true
python3 -c 'import json, sys
ledger = json.loads(sys.argv[1])["requests"]
accepted, rate, hz = ledger["accepted"], ledger["accepted_per_sec"], int(sys.argv[5])
own, mq = (int(ticks) * 1e6 / hz / accepted for ticks in sys.argv[2:4])
print(f"{sys.argv[4]}: ingress {rate:.0f} accepted/s; CPU per request (us): ingress {own:.1f}, RabbitMQ {mq:.1f}")' \
  "$ledger" "$own" $((mq1 - mq0)) "$bin" "$hz"
count() { psql -XAt "$DATABASE_URL" -c "$1"; }
pg0=$(ticks $(pgrep -x postgres)); mq0=$(ticks $(pgrep beam.smp))
events0=$(count "select count(*) from tracking_events")
start=$(date +%s.%N)
"$bin/waybill-worker" 2>/dev/null &
worker=$!
# Done when nothing moved for three looks in a row: every event stored, every change published.
last=-1 same=0 done_at=$start
while [ "$same" -lt 3 ]; do
  now=$(count "select (select count(*) from tracking_events) || '/' || (select count(*) from outbox_to_publish)")
  if [ "$now" = "$last" ] && [ "${now#*/}" = 0 ]; then same=$((same + 1)); else same=0; last=$now; done_at=$(date +%s.%N); fi
  sleep 0.25
done
own=$(ticks "$worker"); pg1=$(ticks $(pgrep -x postgres)); mq1=$(ticks $(pgrep beam.smp))
events=$(( $(count "select count(*) from tracking_events") - events0 ))
kill "$worker"
wait "$worker" 2>/dev/null || true
awk -v e="$events" -v t0="$start" -v t1="$done_at" -v w="$own" -v p=$((pg1 - pg0)) -v m=$((mq1 - mq0)) -v hz="$hz" -v b="$bin" 'BEGIN {
  printf "%s: %d events in %.2f s, %.0f/s; CPU per event (us): worker %.1f, Postgres %.1f, RabbitMQ %.1f\n",
    b, e, t1 - t0, e / (t1 - t0), w * 1e6 / hz / e, p * 1e6 / hz / e, m * 1e6 / hz / e }'
