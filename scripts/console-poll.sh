#!/usr/bin/env bash
# Keeps an operator-console overview "open" without a browser: signs in with an API key and
# fetches /console/overview/live every N seconds, as the open page's in-place refresh does (its
# metric reads, passive queue declares and Postgres queries included). For measuring what an
# open console costs the pipeline: run it beside `waybill-bench bench` and compare with a run
# without it (docs/console.md). Stops after --duration, or on Ctrl-C.
#
#   scripts/console-poll.sh --key "$WAYBILL_CONSOLE_KEY" [--url http://127.0.0.1:8081] \
#                           [--every 5] [--duration 600] [--pages overview]
#
# --pages: comma-separated pages refreshed each round: overview (the live fragment), sources,
# subscriptions, deadletters, keys.
set -euo pipefail

url="http://127.0.0.1:8081"; every=5; duration=600; pages="overview"; key="${WAYBILL_CONSOLE_KEY:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --key) key="$2"; shift 2 ;;
    --url) url="$2"; shift 2 ;;
    --every) every="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --pages) pages="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[ -n "$key" ] || { echo "error: --key (or WAYBILL_CONSOLE_KEY) is required: an admin or read key" >&2; exit 2; }

jar=$(mktemp); trap 'rm -f "$jar"' EXIT
form=$(curl -fsS -c "$jar" "$url/console/login")
token=$(printf '%s' "$form" | sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' | head -1)
status=$(curl -sS -o /dev/null -w '%{http_code}' -b "$jar" -c "$jar" \
  --data-urlencode "csrf=$token" --data-urlencode "key=$key" "$url/console/login")
[ "$status" = 303 ] || { echo "error: sign-in answered $status (is the key admin or read?)" >&2; exit 1; }
echo "signed in; refreshing [$pages] every ${every}s for ${duration}s" >&2

rounds=0; failures=0; end=$((SECONDS + duration))
while [ "$SECONDS" -lt "$end" ]; do
  for page in ${pages//,/ }; do
    path="/console/$page"; [ "$page" = overview ] && path="/console/overview/live"
    code=$(curl -sS -o /dev/null -w '%{http_code}' -b "$jar" -H 'HX-Request: true' "$url$path" || echo 000)
    [ "$code" = 200 ] || failures=$((failures + 1))
  done
  rounds=$((rounds + 1))
  sleep "$every"
done
echo "$rounds rounds, $failures failed requests"
