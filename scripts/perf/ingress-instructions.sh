#!/usr/bin/env bash
# Counts the instructions the ingress executes for one webhook, under valgrind's callgrind,
# which counts instructions, not time: the same binary and requests give the same count
# within about 1.5 %, whatever else the machine is doing. The ingress's rate moves by 10 % or
# more from one run to the next on a shared 2-core machine, so a change of a few per cent to
# the request path shows here and not in `waybill-bench bench` (docs/performance.md).
#
#   cargo build --release --bins
#   scripts/perf/ingress-instructions.sh                      # this build, 5,000 requests
#   scripts/perf/ingress-instructions.sh before/target/release 5000
#
# The ingress (from the directory given, default target/release) runs under callgrind twice:
# once idle, once while `waybill-bench loadgen` posts COUNT valid Starshipit webhooks at 300/s.
# The difference, divided by COUNT, is printed on stdout. valgrind's CPU model has no SHA
# instructions, so HMAC and event ids run sha2's portable code there: about 30,000 of a
# request's instructions that take a few hundred with the CPU's SHA extensions.
#
# Uses the server of DATABASE_URL (default: the local one) with a scratch database
# `waybill_icount`, and the broker of AMQP_URL with the queue prefix `perf-icount.`; both are
# removed at the end (the queues with rabbitmqctl, when it is installed). With PROFILE_OUT set,
# the loaded run's callgrind profile is kept there, for `callgrind_annotate --inclusive=yes`.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin_dir="${1:-target/release}"
count="${2:-5000}"
command -v valgrind >/dev/null || { echo "valgrind is needed (Debian: apt-get install valgrind)" >&2; exit 1; }
for tool in waybill waybill-bench; do
  [ -x "target/release/$tool" ] || { echo "build first: cargo build --release --bins" >&2; exit 1; }
done
[ -x "$bin_dir/waybill-ingress" ] || { echo "no waybill-ingress in $bin_dir" >&2; exit 1; }

# shellcheck source=scripts/perf/scratch.sh
. scripts/perf/scratch.sh
export WAYBILL_INGRESS_ADDR="127.0.0.1:18091"
scratch_begin waybill_icount perf-icount.

# Instructions of one ingress run that serves `$1` requests.
instructions() {
  local out="$scratch/callgrind.$1"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin_dir/waybill-ingress" \
    >"$scratch/ingress.log" 2>&1 &
  local ingress=$!
  wait_healthy "$WAYBILL_INGRESS_ADDR" || { cat "$scratch/ingress.log" >&2; exit 1; }
  if [ "$1" -gt 0 ]; then
    target/release/waybill-bench loadgen --ingress "http://$WAYBILL_INGRESS_ADDR" \
      --sources starshipit --count "$1" --rate 300 --concurrency 16 \
      --duplicates 0 --invalid 0 --out-of-order 0 --no-drain --quiet >/dev/null
  fi
  kill -TERM "$ingress"
  wait "$ingress" || true
  sed -n 's/^summary: //p' "$out"
}

echo "ingress from $bin_dir: idle, then $count requests (each run takes about half a minute)" >&2
idle=$(instructions 0)
loaded=$(instructions "$count")
if [ -n "${PROFILE_OUT:-}" ]; then cp "$scratch/callgrind.$count" "$PROFILE_OUT"; fi
echo "instructions a request: $(( (loaded - idle) / count )) ($count requests; idle run $idle, loaded run $loaded)"
