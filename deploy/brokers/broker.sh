#!/usr/bin/env bash
# Start and stop a real message broker for `aeserve stream`'s tests and for trying it out.
#
#   deploy/brokers/broker.sh start mosquitto PORT DIR   Mosquitto on 127.0.0.1:PORT, its config,
#                                                       persistence, log and pid in DIR
#   deploy/brokers/broker.sh stop mosquitto DIR
#
# `start` prints "started" and exits 0 once the broker accepts connections. Where it cannot start
# a broker it prints why on one line and exits 3 (the tests skip with that reason); any other
# failure exits 1.
set -euo pipefail

usage() { echo "usage: $0 start mosquitto PORT DIR | stop mosquitto DIR" >&2; exit 1; }
[ $# -ge 3 ] || usage
action=$1 broker=$2
[ "$broker" = mosquitto ] || { echo "unknown broker $broker (known: mosquitto)"; exit 1; }

find_mosquitto() {
  command -v mosquitto 2>/dev/null || { [ -x /usr/sbin/mosquitto ] && echo /usr/sbin/mosquitto; } \
    || true
}

case "$action" in
  start)
    [ $# -eq 4 ] || usage
    port=$3 dir=$4
    binary=$(find_mosquitto)
    if [ -z "$binary" ]; then
      echo "mosquitto is not installed (Debian and Ubuntu: apt-get install mosquitto)"
      exit 3
    fi
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    cat > "$dir/mosquitto.conf" <<CONF
listener $port 127.0.0.1
user $(id -un)
allow_anonymous true
# A subscriber's QoS 1 messages are queued, not dropped, while it catches up (the default keeps
# 1,000 and drops the rest), and up to 1,000 may be unacknowledged at once, so that the runner
# can score waiting messages together.
max_queued_messages 1000000
max_inflight_messages 1000
# Small messages leave at once instead of waiting on Nagle's algorithm (tens of ms each).
set_tcp_nodelay true
persistence true
persistence_location $dir/
log_dest file $dir/mosquitto.log
pid_file $dir/mosquitto.pid
CONF
    "$binary" -c "$dir/mosquitto.conf" -d
    for _ in $(seq 1 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo started
        exit 0
      fi
      sleep 0.1
    done
    echo "mosquitto did not accept connections on port $port within 10 s: $(tail -n 3 "$dir/mosquitto.log" 2>/dev/null | tr '\n' ' ')"
    exit 3
    ;;
  stop)
    dir=$3
    if [ -f "$dir/mosquitto.pid" ]; then
      pid=$(cat "$dir/mosquitto.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      rm -f "$dir/mosquitto.pid"
    fi
    echo stopped
    ;;
  *) usage ;;
esac
