#!/usr/bin/env bash
# rabbitmq_cluster.sh - throwaway N-node (default 3) RabbitMQ cluster on loopback,
# side by side with (and isolated from) the distro's own rabbit@localhost node.
# Used by tests/faults/test_cluster.py and bench/cluster_compare.py through tools/rabbitmq_cluster.py
# (which picks free ports); runs as root with Debian's rabbitmq-server installed (bin/prepare-machine).
#
# Usage:  rabbitmq-cluster.sh <command> <scratch-dir> [args...]
#   up      <dir>            create dirs/cookie, start private epmd + nodes, cluster them
#   down    <dir>            stop all nodes, kill leftovers BY PID, kill private epmd, rm -rf <dir>
#   status  <dir>            PIDs + cluster_status (via node 1, falls back to others)
#   ctl     <dir> <i> ARGS   rabbitmqctl       -n n<i>@localhost ARGS (own cookie/env)
#   queues  <dir> <i> ARGS   rabbitmq-queues   -n n<i>@localhost ARGS
#   diag    <dir> <i> ARGS   rabbitmq-diagnostics -n n<i>@localhost ARGS
#   stop-app  <dir> <i>      rabbitmqctl stop_app on node i (VM stays up)
#   start-app <dir> <i>      rabbitmqctl start_app on node i
#   kill    <dir> <i>        SIGKILL node i's beam.smp (by PID from its pid file)
#   start   <dir> <i>        (re)start node i's VM (after kill); it rejoins on its own
#   stop    <dir> <i>        graceful stop of node i's VM (rabbitmqctl stop)
#   leader  <dir> <queue>    print the quorum-queue leader node name (asks any live node)
#   env     <dir> <i>        print the env exports used for node i (for manual use)
#
# Tunables (env): NODES=3  AMQP_BASE=5700 (node i -> AMQP_BASE+i)  DIST_BASE=25700
#   MGMT=0|1 (management plugin, port MGMT_BASE+i, MGMT_BASE=15700)  EPMD_PORT=4371
#   CTL_DIST_BASE=35800  NODE_HOST=localhost  START_TIMEOUT=120
#
# Isolation from the system node: own HOME (=> own .erlang.cookie), own epmd port,
# own RABBITMQ_CONF_ENV_FILE / RABBITMQ_CONFIG_FILE / RABBITMQ_ADVANCED_CONFIG_FILE /
# RABBITMQ_ENABLED_PLUGINS_FILE, so nothing under /etc/rabbitmq or /var/lib/rabbitmq
# is read or written, and the system node cannot even see these nodes.
# Always calls /usr/lib/rabbitmq/bin/* directly: /usr/sbin/rabbitmqctl su's to the
# rabbitmq user, which resets HOME (=> system cookie) and drops our env.
set -euo pipefail

RMQ_BIN=/usr/lib/rabbitmq/bin
NODES=${NODES:-3}
AMQP_BASE=${AMQP_BASE:-5700}
DIST_BASE=${DIST_BASE:-25700}
MGMT=${MGMT:-0}
MGMT_BASE=${MGMT_BASE:-15700}
EPMD_PORT=${EPMD_PORT:-4371}
CTL_DIST_BASE=${CTL_DIST_BASE:-35800}
NODE_HOST=${NODE_HOST:-localhost}
START_TIMEOUT=${START_TIMEOUT:-120}

die() { echo "rabbitmq-cluster: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

cmd=${1:-}; S=${2:-}
[ -n "$cmd" ] && [ -n "$S" ] || { sed -n '2,28p' "$0"; exit 2; }
case "${S%/}" in ""|/tmp|/var/tmp|/etc*|/usr*|/var/lib*|/bin*|/sbin*|/lib*|/boot*|/root|/home) die "refusing scratch dir $S";; esac
if [ "$cmd" = up ]; then mkdir -p "$S"; elif [ ! -d "$S" ]; then
  [ "$cmd" = down ] && { echo "rabbitmq-cluster: $S absent, nothing to do" >&2; exit 0; }
  die "no such scratch dir $S (run: $0 up $S)"; fi
S=$(cd "$S" && pwd)
MARK="$S/.rabbitmq-cluster-scratch"   # `down` only deletes a dir that carries this marker
shift 2
secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", b-a}'; }

node()  { echo "n$1@$NODE_HOST"; }
ndir()  { echo "$S/n$1"; }

# Environment shared by servers and CLI tools of OUR cluster.
common_env() {
  export HOME="$S"                                   # => $S/.erlang.cookie
  export RABBITMQ_CONF_ENV_FILE="$S/rabbitmq-env.conf" # NOT /etc/rabbitmq/rabbitmq-env.conf
  export ERL_EPMD_PORT="$EPMD_PORT" ERL_EPMD_ADDRESS=127.0.0.1
  export RABBITMQ_CTL_DIST_PORT_MIN="$CTL_DIST_BASE" RABBITMQ_CTL_DIST_PORT_MAX="$((CTL_DIST_BASE + 50))"
  unset ERL_FLAGS RABBITMQ_NODENAME NODENAME || true
}

node_env() {  # $1 = index
  local i=$1 d; d=$(ndir "$1")
  common_env
  export RABBITMQ_NODENAME="$(node "$i")"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT="$((AMQP_BASE + i))"
  export RABBITMQ_DIST_PORT="$((DIST_BASE + i))"
  export RABBITMQ_MNESIA_BASE="$d/mnesia"
  export RABBITMQ_LOG_BASE="$d/log"
  export RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf"
  export RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins"
  export RABBITMQ_PID_FILE="$d/beam.pid"
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

ctl()    { local i=$1; shift; ( common_env; "$RMQ_BIN/rabbitmqctl" -n "$(node "$i")" "$@" ); }
queues() { local i=$1; shift; ( common_env; "$RMQ_BIN/rabbitmq-queues" -n "$(node "$i")" "$@" ); }
diag()   { local i=$1; shift; ( common_env; "$RMQ_BIN/rabbitmq-diagnostics" -n "$(node "$i")" "$@" ); }

beam_pid()    { cat "$(ndir "$1")/beam.pid" 2>/dev/null || true; }
wrapper_pid() { cat "$(ndir "$1")/wrapper.pid" 2>/dev/null || true; }
# alive = exists and is not a zombie (an unreaped, already-dead child still passes kill -0)
alive()       { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null && ! grep -q '^[0-9]* (.*) Z' "/proc/$1/stat" 2>/dev/null; }

prepare() {
  mkdir -p "$S"; touch "$MARK"
  : > "$S/rabbitmq-env.conf"
  if [ ! -f "$S/.erlang.cookie" ]; then
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F > "$S/.erlang.cookie"
    chmod 400 "$S/.erlang.cookie"
  fi
  local i d
  for i in $(seq 1 "$NODES"); do
    d=$(ndir "$i"); mkdir -p "$d/mnesia" "$d/log"
    cat > "$d/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$((AMQP_BASE + i))
# guest may only log in over loopback (default); clients here use 127.0.0.1
loopback_users.guest = true
log.console = false
log.file.level = info
EOF
    if [ "$MGMT" = 1 ]; then
      printf 'management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = %s\n' "$((MGMT_BASE + i))" >> "$d/rabbitmq.conf"
      echo '[rabbitmq_management].' > "$d/enabled_plugins"
    else
      echo '[].' > "$d/enabled_plugins"
    fi
  done
}

start_epmd() {
  if alive "$(cat "$S/epmd.pid" 2>/dev/null || true)"; then return 0; fi
  ( ERL_EPMD_ADDRESS=127.0.0.1 setsid epmd -port "$EPMD_PORT" >"$S/epmd.log" 2>&1 </dev/null & echo $! > "$S/epmd.pid" )
  local k; for k in $(seq 1 50); do epmd -port "$EPMD_PORT" -names >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "private epmd on port $EPMD_PORT did not come up (port taken?)"
}

start_node() {  # $1 = index; background VM start, returns immediately
  local i=$1 d; d=$(ndir "$i")
  if alive "$(beam_pid "$i")"; then log "$(node "$i") already running"; return 0; fi
  rm -f "$d/beam.pid"
  ( node_env "$i"; cd "$d"
    setsid "$RMQ_BIN/rabbitmq-server" >"$d/log/startup.out" 2>&1 </dev/null &
    echo $! > "$d/wrapper.pid" )
}

wait_node() {  # $1 = index; waits until the rabbit app is running
  local i=$1
  ctl "$i" wait --timeout "$START_TIMEOUT" "$(ndir "$i")/beam.pid" >/dev/null 2>&1 \
    || { tail -20 "$(ndir "$i")/log/startup.out" >&2; die "$(node "$i") did not start"; }
}

stop_node() {  # graceful, then by PID
  local i=$1 b w k; b=$(beam_pid "$i"); w=$(wrapper_pid "$i")
  if alive "$b"; then ctl "$i" stop --timeout 30 >/dev/null 2>&1 || true; fi
  for k in $(seq 1 50); do alive "$b" || break; sleep 0.2; done
  alive "$b" && { log "TERM beam $b"; kill -TERM "$b" 2>/dev/null || true; sleep 2; }
  alive "$b" && { log "KILL beam $b"; kill -KILL "$b" 2>/dev/null || true; }
  for k in $(seq 1 25); do alive "$w" || break; sleep 0.2; done
  alive "$w" && { kill -TERM "$w" 2>/dev/null || true; }
  return 0
}

case "$cmd" in
  up)
    t0=$(date +%s.%N)
    prepare; start_epmd
    for i in $(seq 1 "$NODES"); do start_node "$i"; done
    for i in $(seq 1 "$NODES"); do wait_node "$i"; done
    t1=$(date +%s.%N)
    log "all $NODES VMs up in $(secs "$t0" "$t1") s"
    for i in $(seq 2 "$NODES"); do
      if ctl 1 cluster_status --formatter json 2>/dev/null | grep -q "\"$(node "$i")\""; then
        log "$(node "$i") already clustered"; continue; fi
      # (join_cluster prints harmless "Failed to create a tracked connection table" errors; logged)
      for step in stop_app reset "join_cluster $(node 1)" start_app; do
        # shellcheck disable=SC2086
        ctl "$i" $step >>"$S/join.log" 2>&1 || { tail -20 "$S/join.log" >&2; die "$(node "$i"): $step failed"; }
      done
    done
    ctl 1 await_online_nodes "$NODES" --timeout 60 >/dev/null 2>&1 || true
    t2=$(date +%s.%N)
    log "clustered in $(secs "$t1" "$t2") s; total $(secs "$t0" "$t2") s"
    ctl 1 cluster_status --formatter json | python3 -c 'import json,sys; d=json.load(sys.stdin); print("running_nodes:", d["running_nodes"])'
    ;;
  down)
    for i in $(seq "$NODES" -1 1); do stop_node "$i"; done
    ep=$(cat "$S/epmd.pid" 2>/dev/null || true)
    if alive "$ep"; then kill -TERM "$ep" 2>/dev/null || true; sleep 0.3; alive "$ep" && kill -KILL "$ep" 2>/dev/null || true; fi
    left=""
    for i in $(seq 1 "$NODES"); do for p in "$(beam_pid "$i")" "$(wrapper_pid "$i")"; do alive "$p" && left="$left $p"; done; done
    alive "$ep" && left="$left $ep"
    [ -z "$left" ] || die "still alive:$left (not removing $S)"
    if [ -f "$MARK" ]; then rm -rf "$S"; log "down: nodes + private epmd stopped, $S removed"
    else log "down: nodes + private epmd stopped; no marker in $S, so not deleting it"; fi
    ;;
  status)
    for i in $(seq 1 "$NODES"); do
      b=$(beam_pid "$i"); st=dead; alive "$b" && st=alive
      echo "$(node "$i") beam=$b $st amqp=$((AMQP_BASE + i)) dist=$((DIST_BASE + i))"
    done
    for i in $(seq 1 "$NODES"); do alive "$(beam_pid "$i")" && { ctl "$i" cluster_status && break; }; done
    ;;
  ctl)       i=$1; shift; ctl "$i" "$@" ;;
  queues)    i=$1; shift; queues "$i" "$@" ;;
  diag)      i=$1; shift; diag "$i" "$@" ;;
  stop-app)  ctl "$1" stop_app ;;
  start-app) ctl "$1" start_app ;;
  stop)      stop_node "$1" ;;
  kill)      b=$(beam_pid "$1"); alive "$b" || die "node $1 not running"; kill -KILL "$b"; log "SIGKILL $(node "$1") beam $b" ;;
  start)     start_epmd; start_node "$1"; wait_node "$1"; log "$(node "$1") started" ;;
  leader)
    q=$1
    for i in $(seq 1 "$NODES"); do
      out=$(ctl "$i" list_queues -q --no-table-headers name leader 2>/dev/null) || continue
      echo "$out" | awk -v q="$q" '$1==q {print $2; f=1} END {exit !f}' && exit 0
    done
    die "no live node reports a leader for $q" ;;
  env)
    ( node_env "$1"; env | grep -E '^(HOME|RABBITMQ_|ERL_EPMD)' | sed 's/^/export /' ) ;;
  *) die "unknown command $cmd" ;;
esac
