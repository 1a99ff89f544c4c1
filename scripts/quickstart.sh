#!/usr/bin/env bash
# Brings up Waybill natively (PostgreSQL and RabbitMQ installed on this machine; started if they
# are stopped), posts a signed sample webhook, creates an API key and shows the shipment the
# webhook produced, read with that key; then prints the operator console's address and a key to
# sign in with (docs/console.md).
#
#   scripts/quickstart.sh          # keeps ingress and worker running until Ctrl-C
#   scripts/quickstart.sh --once   # shows the webhook flowing, then stops everything
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
ensure_services

once=false
[ "${1:-}" = "--once" ] && once=true

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/waybill}"
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export WAYBILL_CONFIG="${WAYBILL_CONFIG:-deploy/waybill.example.toml}"
export WAYBILL_INGRESS_ADDR="${WAYBILL_INGRESS_ADDR:-127.0.0.1:8080}"
export WAYBILL_WORKER_ADDR="${WAYBILL_WORKER_ADDR:-127.0.0.1:8081}"
ingress="http://${WAYBILL_INGRESS_ADDR}"
worker="http://${WAYBILL_WORKER_ADDR}"

echo "building..."
cargo build --quiet --bins
bin="${CARGO_TARGET_DIR:-target}/debug"

# Create the database if it does not exist (the URL's last path segment).
db_name="${DATABASE_URL##*/}"; db_name="${db_name%%\?*}"
admin_url="${DATABASE_URL%/*}/postgres"
if command -v psql >/dev/null 2>&1; then
  if ! psql "$admin_url" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db_name'" | grep -q 1; then
    psql "$admin_url" -qc "CREATE DATABASE \"$db_name\""
  fi
fi
"$bin/waybill" migrate
"$bin/waybill" topology

mkdir -p target/quickstart
"$bin/waybill-worker" > target/quickstart/worker.log 2>&1 &
worker_pid=$!
"$bin/waybill-ingress" > target/quickstart/ingress.log 2>&1 &
ingress_pid=$!
cleanup() { kill "$ingress_pid" "$worker_pid" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

for url in "$ingress/readyz" "$worker/readyz"; do
  for _ in $(seq 1 120); do
    curl -fsS "$url" >/dev/null 2>&1 && break
    sleep 0.25
  done
  curl -fsS "$url" >/dev/null || { echo "error: $url is not ready; see target/quickstart/*.log" >&2; exit 1; }
done
echo "ingress on $ingress, worker on $worker (logs in target/quickstart/)"

body=examples/webhooks/starshipit.json
signature=$(openssl dgst -sha256 -hmac "demo-starshipit-secret" -binary < "$body" | base64)
echo
echo "POST $ingress/v1/webhooks/starshipit"
status=$(curl -sS -o target/quickstart/response.json -w '%{http_code}' -X POST "$ingress/v1/webhooks/starshipit" \
  -H 'Content-Type: application/json' \
  -H "X-Starshipit-Signature: $signature" \
  --data-binary "@$body")
cat target/quickstart/response.json
echo
if [ "$status" != 200 ]; then
  echo "error: the webhook was answered $status, not 200" >&2
  exit 1
fi

# The shipments API needs an API key (docs/security.md). The key is printed once, on stdout;
# only its hash is stored.
echo
echo "waybill keys create --tenant default --scope shipments:read --name quickstart"
api_key=$("$bin/waybill" keys create --tenant default --scope shipments:read --name quickstart)

shipment="$worker/v1/shipments/starshipit/QQQ001737901000931501"
for _ in $(seq 1 40); do
  curl -fsS -H "Authorization: Bearer $api_key" "$shipment" >/dev/null 2>&1 && break
  sleep 0.25
done
echo
echo "GET $shipment"
curl -fsS -H "Authorization: Bearer $api_key" "$shipment"
echo

if [ "$once" = true ]; then
  exit 0
fi
echo
echo "API key for this run (tenant default, shipments:read; shown only now):"
echo "  export WAYBILL_API_KEY=$api_key"
echo "  curl -H \"Authorization: Bearer \$WAYBILL_API_KEY\" $shipment"
# The operator console (docs/console.md) signs in with an admin or read key.
console_key=$("$bin/waybill" keys create --tenant default --scope admin --name "quickstart console" 2>/dev/null)
echo
echo "Operator console: $worker/console/"
echo "  sign in with this admin key (shown only now): $console_key"
echo "  another one: $bin/waybill keys create --scope admin --name me   (or --scope read, with --tenant)"
echo "Waybill is running. Press Ctrl-C to stop."
wait
