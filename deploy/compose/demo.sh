#!/bin/sh
# The compose `demo` service (profile "demo"): posts the sample Starshipit webhook
# (examples/webhooks/starshipit.json), signed with the demo secret of deploy/waybill.example.toml,
# to the ingress, then prints the shipment the worker made of it.
#
#   docker compose --profile demo run --rm demo
#
# Environment (defaults are the compose service names): INGRESS_URL, WORKER_URL, WEBHOOK_BODY,
# STARSHIPIT_SECRET. POSIX sh, so it runs on the alpine image as on any machine with curl and
# openssl.
set -eu

ingress="${INGRESS_URL:-http://ingress:8080}"
worker="${WORKER_URL:-http://worker:8081}"
body="${WEBHOOK_BODY:-/examples/webhooks/starshipit.json}"
secret="${STARSHIPIT_SECRET:-demo-starshipit-secret}"
tracking_number="${TRACKING_NUMBER:-QQQ001737901000931501}"

if ! command -v curl >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
  apk add --no-cache --quiet curl openssl >/dev/null
fi

# Starshipit signs the raw body: base64(HMAC-SHA256(secret, body)) in X-Starshipit-Signature.
signature="$(openssl dgst -sha256 -hmac "$secret" -binary <"$body" | openssl base64 -A)"

echo "POST $ingress/v1/webhooks/starshipit"
curl -sS --fail-with-body -X POST "$ingress/v1/webhooks/starshipit" \
  -H 'Content-Type: application/json' \
  -H "X-Starshipit-Signature: $signature" \
  --data-binary "@$body"
echo

shipment="$worker/v1/shipments/starshipit/$tracking_number"
attempt=0
until curl -fsS "$shipment" >/dev/null 2>&1; do
  attempt=$((attempt + 1))
  if [ "$attempt" -ge 40 ]; then
    echo "demo: $shipment did not appear within 20 s; see: docker compose logs worker" >&2
    exit 1
  fi
  sleep 0.5
done
echo
echo "GET $shipment"
curl -fsS "$shipment"
echo
