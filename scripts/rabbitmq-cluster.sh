#!/usr/bin/env bash
# A three-node RabbitMQ cluster on loopback, beside (not instead of) the machine's own broker:
# for the cluster fault suite and the worker-scaling bench (docs/scaling.md).
#
#   scripts/rabbitmq-cluster.sh start     # three nodes, clustered; prints their AMQP URLs
#   scripts/rabbitmq-cluster.sh status    # each node's state and the cluster's members
#   scripts/rabbitmq-cluster.sh quorum QUEUE  # the quorum queue's members: "node role" lines
#   scripts/rabbitmq-cluster.sh connections   # client connections: "node connection-name" lines
#   scripts/rabbitmq-cluster.sh stop-node N | start-node N   # a fault: node N (1-3) down, up
#   scripts/rabbitmq-cluster.sh stop      # stops all three and removes their data
#
# Node N is `waybillN@localhost`: AMQP on 127.0.0.1:(5680+N), Erlang distribution on
# 127.0.0.1:(25680+N), its own configuration, data and log directories under
# $WAYBILL_CLUSTER_DIR (default /tmp/waybill-rabbitmq-cluster). The nodes share the local
# broker's Erlang cookie, so they run as the broker's user (`rabbitmq` when this runs as root).
# Every wait is bounded (WAYBILL_CLUSTER_TIMEOUT, default 90 s).
set -euo pipefail

dir="${WAYBILL_CLUSTER_DIR:-/tmp/waybill-rabbitmq-cluster}"
timeout="${WAYBILL_CLUSTER_TIMEOUT:-90}"
nodes=(1 2 3)
bin=/usr/lib/rabbitmq/bin
[ -x "$bin/rabbitmq-server" ] || bin="$(dirname "$(command -v rabbitmq-server)")"

node_name() { echo "waybill$1@localhost"; }
amqp_port() { echo $((5680 + $1)); }
amqp_url() { echo "amqp://guest:guest@127.0.0.1:$(amqp_port "$1")/%2f"; }

# Runs a RabbitMQ command for node $1 as the broker's user, with that node's environment.
as_node() {
  local n="$1"; shift
  local home=~ user=""
  if [ "$(id -u)" -eq 0 ] && id rabbitmq >/dev/null 2>&1; then
    user=rabbitmq; home=/var/lib/rabbitmq
  fi
  local env=(
    HOME="$home"
    RABBITMQ_NODENAME="$(node_name "$n")"
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    RABBITMQ_NODE_PORT="$(amqp_port "$n")"
    RABBITMQ_DIST_PORT=$((25680 + n))
    RABBITMQ_CONFIG_FILE="$dir/node$n/rabbitmq.conf"
    RABBITMQ_CONF_ENV_FILE="$dir/node$n/rabbitmq-env.conf"
    RABBITMQ_ENABLED_PLUGINS_FILE="$dir/node$n/enabled_plugins"
    RABBITMQ_MNESIA_BASE="$dir/node$n/mnesia"
    RABBITMQ_LOG_BASE="$dir/node$n/log"
    RABBITMQ_PID_FILE="$dir/node$n/pid"
    ERL_EPMD_ADDRESS=127.0.0.1
  )
  if [ -n "$user" ]; then
    (cd "$home" && ${launcher:-} runuser -u "$user" -- env "${env[@]}" "$@")
  else
    ${launcher:-} env "${env[@]}" "$@"
  fi
}

ctl() { local n="$1"; shift; as_node "$n" "$bin/rabbitmqctl" -n "$(node_name "$n")" "$@"; }

prepare() {
  local n="$1" d="$dir/node$1"
  mkdir -p "$d/mnesia" "$d/log"
  cat >"$d/rabbitmq.conf" <<EOF
listeners.tcp.local = 127.0.0.1:$(amqp_port "$n")
cluster_name = waybill-test
EOF
  # The machine's rabbitmq-env.conf names the local broker's node; these nodes have their own.
  echo 'ERL_EPMD_ADDRESS=127.0.0.1' >"$d/rabbitmq-env.conf"
  echo '[].' >"$d/enabled_plugins"
  if [ "$(id -u)" -eq 0 ] && id rabbitmq >/dev/null 2>&1; then
    chown -R rabbitmq:rabbitmq "$dir"
  fi
}

start_node() {
  local n="$1"
  if ctl "$n" status >/dev/null 2>&1; then return; fi
  [ -d "$dir/node$n" ] || prepare "$n"
  # In a session of its own, so the node outlives the shell that started it.
  ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}" launcher=setsid \
    as_node "$n" "$bin/rabbitmq-server" -detached </dev/null >/dev/null 2>&1
  # -detached returns before the node has even registered its name: wait, within the bound.
  local deadline=$((SECONDS + timeout))
  until ctl "$n" await_startup --timeout 5 >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "error: $(node_name "$n") did not start within ${timeout}s; see $dir/node$n/log" >&2
      return 1
    fi
    sleep 1
  done
}

join() {
  local n="$1" seed; seed="$(node_name 1)"
  if ctl "$n" cluster_status --formatter json 2>/dev/null | grep -q "\"$seed\""; then
    if ctl 1 cluster_status --formatter json | grep -q "\"$(node_name "$n")\""; then return; fi
  fi
  local step out
  for step in stop_app reset "join_cluster $seed" start_app; do
    # shellcheck disable=SC2086 # the step is a command and its argument
    out=$(ctl "$n" $step 2>&1) || { echo "$out" >&2; return 1; }
  done
}

# Waits until node $1 (default 1) sees at least $2 (default 3) running members.
wait_members() {
  local n="${1:-1}" want="${2:-3}" deadline=$((SECONDS + timeout)) running
  while [ "$SECONDS" -lt "$deadline" ]; do
    running=$(ctl "$n" cluster_status --formatter json 2>/dev/null |
      python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("running_nodes", [])))' 2>/dev/null || echo 0)
    [ "$running" -ge "$want" ] && return 0
    sleep 1
  done
  echo "error: $(node_name "$n") did not see $want running nodes within ${timeout}s" >&2
  return 1
}

case "${1:-}" in
  start)
    for n in "${nodes[@]}"; do start_node "$n"; done
    for n in 2 3; do join "$n"; done
    wait_members
    echo "three nodes running; AMQP URLs:" >&2
    for n in "${nodes[@]}"; do amqp_url "$n"; done
    ;;
  status)
    for n in "${nodes[@]}"; do
      if ctl "$n" status >/dev/null 2>&1; then echo "$(node_name "$n") running ($(amqp_url "$n"))"
      else echo "$(node_name "$n") stopped"; fi
    done
    ctl 1 cluster_status --formatter json 2>/dev/null | python3 -c \
      'import json,sys; print("running:", " ".join(json.load(sys.stdin).get("running_nodes", [])))' || true
    ;;
  quorum)
    queue="${2:?queue name}"
    for n in "${nodes[@]}"; do
      out=$(as_node "$n" "$bin/rabbitmq-queues" -n "$(node_name "$n")" quorum_status "$queue" \
        --formatter json 2>/dev/null) || continue
      printf '%s' "$out" | python3 -c \
        'import json,sys; [print(m["Node Name"], m["Raft State"] if isinstance(m["Raft State"], str) else "down") for m in json.load(sys.stdin)]'
      exit 0
    done
    echo "error: no running node knows the quorum queue $queue" >&2; exit 1
    ;;
  connections)
    # A connection's node is the one whose AMQP port it reached; its name is the one the
    # client gave (Waybill names each: waybill-ingress, waybill-worker-0, ...).
    for n in "${nodes[@]}"; do
      out=$(ctl "$n" list_connections -q port client_properties --formatter json 2>/dev/null) || continue
      printf '%s' "$out" | python3 -c '
import json, sys
def name_of(props):
    if isinstance(props, dict):
        return props.get("connection_name", "")
    for entry in props or []:
        if isinstance(entry, list) and entry and entry[0] == "connection_name":
            return entry[-1]
    return ""
for connection in json.load(sys.stdin):
    print("waybill%d@localhost" % (connection["port"] - 5680), name_of(connection.get("client_properties")) or "-")
'
      exit 0
    done
    echo "error: no node of the cluster is running" >&2; exit 1
    ;;
  stop-node)
    n="${2:?node number 1-3}"; ctl "$n" stop >/dev/null
    ;;
  start-node)
    # Back in the cluster: it sees itself and at least one other running node (the others
    # may be stopped on purpose).
    n="${2:?node number 1-3}"; start_node "$n"; wait_members "$n" 2
    ;;
  stop)
    for n in "${nodes[@]}"; do ctl "$n" stop >/dev/null 2>&1 || true; done
    rm -rf "$dir"
    ;;
  *)
    sed -n '2,16p' "$0" >&2; exit 2
    ;;
esac
