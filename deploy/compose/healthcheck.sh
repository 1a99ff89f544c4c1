#!/bin/bash
# waybill-healthcheck [PORT] [PATH]
#
# Exits 0 when http://127.0.0.1:PORT/PATH answers with a 2xx status, 1 otherwise. Plain bash
# (its /dev/tcp redirection), so the runtime image needs neither curl nor wget. Installed in the
# image as /usr/local/bin/waybill-healthcheck and used by docker-compose.yml:
#
#   waybill-healthcheck 8080 /readyz     # ingress: the broker channel is usable
#   waybill-healthcheck 8081 /readyz     # worker: Postgres and the broker are usable
#
# Environment: WAYBILL_HEALTHCHECK_TIMEOUT (seconds to wait for the status line, default 3).
set -u

port="${1:-8080}"
path="${2:-/readyz}"
timeout="${WAYBILL_HEALTHCHECK_TIMEOUT:-3}"

case "$port" in
  '' | *[!0-9]*) echo "waybill-healthcheck: invalid port '$port'" >&2; exit 2 ;;
esac
case "$path" in
  /*) ;;
  *) path="/$path" ;;
esac

if ! exec 3<>"/dev/tcp/127.0.0.1/$port"; then
  echo "waybill-healthcheck: nothing listens on 127.0.0.1:$port" >&2
  exit 1
fi
printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nUser-Agent: waybill-healthcheck\r\nAccept: */*\r\nConnection: close\r\n\r\n' \
  "$path" "$port" >&3

# The status line: "HTTP/1.1 200 OK\r".
status_line=''
if ! IFS= read -r -t "$timeout" status_line <&3; then
  echo "waybill-healthcheck: no answer from 127.0.0.1:$port$path within ${timeout}s" >&2
  exit 1
fi
exec 3<&-
status_line="${status_line%$'\r'}"
read -r _version status _reason <<<"$status_line"

case "$status" in
  2[0-9][0-9]) exit 0 ;;
  *)
    echo "waybill-healthcheck: 127.0.0.1:$port$path answered '$status_line'" >&2
    exit 1
    ;;
esac
