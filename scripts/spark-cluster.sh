#!/usr/bin/env bash
# A Spark standalone cluster on this machine: one master and N workers, each its own JVM, from the PySpark that the
# project's Python has installed. Everything listens on 127.0.0.1 only (RPC, web UIs, executors).
#
#   bash scripts/spark-cluster.sh start  [--workers N] [--cores C] [--memory M] [--port P] [--ui-port U]
#   bash scripts/spark-cluster.sh status
#   bash scripts/spark-cluster.sh stop
#
# start: waits until the master reports N alive workers, then prints the master URL (spark://127.0.0.1:P); give it
# to `sail run` as `spark: {master: ...}` in the config. Defaults: 2 workers x 1 core x 1g, port 7077, master web
# UI 8080 (its /json/ is what start polls).
# State (pid files, logs, the workers' scratch): $SAIL_SPARK_CLUSTER_DIR, default .spark-cluster/ in the repository.
# Python: $PYSPARK_PYTHON, else .venv/bin/python of the repository, else python3. Executors run that interpreter
# and import the repository's packages (PYTHONPATH starts with the repository root).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=${SAIL_SPARK_CLUSTER_DIR:-$ROOT/.spark-cluster}
HOST=127.0.0.1
MASTER_CLASS=org.apache.spark.deploy.master.Master
WORKER_CLASS=org.apache.spark.deploy.worker.Worker

usage() {
  sed -n '5,7p' "$0" | sed 's/^#   //' >&2
}

die() {  # die CODE MESSAGE
  echo "spark-cluster: $2" >&2
  exit "$1"
}

# ------------------------------------------------------------------------------------------------- arguments

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  start | stop | status) ;;
  -h | --help) usage; exit 0 ;;
  "") usage; die 2 "missing command (start, stop or status)" ;;
  *) usage; die 2 "unknown command '$cmd' (start, stop or status)" ;;
esac

workers=2 cores=1 memory=1g port=7077 ui_port=8080 timeout=90
while [ $# -gt 0 ]; do
  opt=$1
  case "$opt" in
    --workers | --cores | --memory | --port | --ui-port | --timeout)
      [ $# -ge 2 ] || die 2 "$opt needs a value"
      val=$2
      shift 2
      ;;
    -h | --help) usage; exit 0 ;;
    *) die 2 "unknown option '$opt'" ;;
  esac
  [ "$cmd" = start ] || die 2 "$opt applies to start only"
  case "$opt" in
    --workers) workers=$val ;;
    --cores) cores=$val ;;
    --memory) memory=$val ;;
    --port) port=$val ;;
    --ui-port) ui_port=$val ;;
    --timeout) timeout=$val ;;
  esac
done

positive() {  # positive NAME VALUE [MAX]
  [[ $2 =~ ^[1-9][0-9]{0,5}$ ]] && [ "$2" -le "${3:-999999}" ] || die 2 "--$1 must be an integer in [1, ${3:-999999}], got '$2'"
}
positive workers "$workers" 64
positive cores "$cores" 1024
positive port "$port" 65535
positive ui-port "$ui_port" 65535
positive timeout "$timeout"
[[ $memory =~ ^[1-9][0-9]*[mMgG]$ ]] || die 2 "--memory must be an amount like 512m or 1g, got '$memory'"
[ "$port" != "$ui_port" ] || die 2 "--port and --ui-port must differ (both $port)"

# ------------------------------------------------------------------------------------------------- helpers

pid_alive() {  # pid_alive PIDFILE CLASS: the pid file names a running JVM of CLASS
  local pid
  [ -f "$1" ] || return 1
  pid=$(cat "$1")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$2"
}

pid_files() {
  shopt -s nullglob
  local f
  for f in "$STATE"/run/master.pid "$STATE"/run/worker-*.pid; do [ -f "$f" ] && echo "$f"; done
  return 0
}

class_of() {  # the JVM class a pid file belongs to
  case "$(basename "$1")" in master.pid) echo "$MASTER_CLASS" ;; *) echo "$WORKER_CLASS" ;; esac
}

port_free() {  # port_free PORT: nothing listens on 127.0.0.1:PORT (a bind there succeeds)
  "$PY" - "$1" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
PY
}

alive_workers() {  # the master's count of alive workers (its web UI's /json/), or nothing while it does not answer
  "$PY" - "$ui_port" <<'PY' 2>/dev/null || true
import json, sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/json/", timeout=2) as r:
    print(json.load(r)["aliveworkers"])
PY
}

stop_all() {
  local f pid n=0 i
  # workers first, then the master
  for f in $(pid_files | sort -r); do
    if pid_alive "$f" "$(class_of "$f")"; then
      pid=$(cat "$f")
      kill "$pid" 2>/dev/null || true
      for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
      n=$((n + 1))
    fi
    rm -f "$f"
  done
  rm -f "$STATE/master.url" "$STATE/ui.port"
  echo "spark-cluster: stopped $n process(es)"
}

find_python() {
  local py=${PYSPARK_PYTHON:-}
  if [ -z "$py" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then py=$ROOT/.venv/bin/python; else py=$(command -v python3 || true); fi
  fi
  [ -n "$py" ] && command -v "$py" >/dev/null || die 3 "no Python found (set PYSPARK_PYTHON to the project's venv Python)"
  command -v "$py"
}

# ------------------------------------------------------------------------------------------------- commands

if [ "$cmd" = status ]; then
  running=0
  for f in $(pid_files); do
    name=$(basename "$f" .pid)
    if pid_alive "$f" "$(class_of "$f")"; then
      echo "$name: running (pid $(cat "$f"))"
      running=$((running + 1))
    else
      echo "$name: not running (stale pid file $f)"
    fi
  done
  if [ "$running" -eq 0 ]; then
    echo "spark-cluster: not running (state: $STATE)"
    exit 1
  fi
  [ -f "$STATE/master.url" ] && echo "master: $(cat "$STATE/master.url")"
  exit 0
fi

if [ "$cmd" = stop ]; then
  stop_all
  exit 0
fi

# start
for f in $(pid_files); do
  if pid_alive "$f" "$(class_of "$f")"; then
    die 1 "already running ($(basename "$f" .pid), pid $(cat "$f")); run '$0 stop' first"
  fi
done
if [ -n "${JAVA_HOME:-}" ]; then java=$JAVA_HOME/bin/java; else java=$(command -v java || true); fi
[ -n "$java" ] && [ -x "$java" ] || die 3 "Java 17 or newer is required and was not found (install openjdk-17 or set JAVA_HOME)"
PY=$(find_python)
spark_home=$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))' 2>/dev/null) ||
  die 3 "PySpark is not installed for $PY (set PYSPARK_PYTHON to the project's venv Python)"
[ -x "$spark_home/bin/spark-class" ] || die 3 "$spark_home/bin/spark-class not found (a broken PySpark install?)"
port_free "$port" || die 1 "port $port on 127.0.0.1 is taken (choose another with --port)"
port_free "$ui_port" || die 1 "port $ui_port on 127.0.0.1 is taken (choose another with --ui-port)"

mkdir -p "$STATE/run" "$STATE/logs" "$STATE/work"
rm -f "$STATE"/run/*.pid
export SPARK_HOME=$spark_home
export SPARK_LOCAL_IP=$HOST  # every server socket of the JVMs (and the web UIs) binds to loopback
export SPARK_LOCAL_HOSTNAME=$HOST
export SPARK_MASTER_HOST=$HOST SPARK_MASTER_PORT=$port SPARK_MASTER_WEBUI_PORT=$ui_port
export SPARK_WORKER_WEBUI_PORT=0  # each worker's UI on a free loopback port
export SPARK_DAEMON_MEMORY=${SPARK_DAEMON_MEMORY:-256m}
export SPARK_MASTER_OPTS="-Dspark.master.rest.enabled=false ${SPARK_MASTER_OPTS:-}"  # no REST submission server
export PYSPARK_PYTHON=$PY
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
url=spark://$HOST:$port

trap 'echo "spark-cluster: start failed; stopping what started" >&2; stop_all >&2' ERR INT TERM
nohup "$spark_home/bin/spark-class" "$MASTER_CLASS" --host "$HOST" --port "$port" --webui-port "$ui_port" \
  >"$STATE/logs/master.log" 2>&1 </dev/null &
echo $! >"$STATE/run/master.pid"
for i in $(seq "$workers"); do
  nohup "$spark_home/bin/spark-class" "$WORKER_CLASS" "$url" --host "$HOST" --cores "$cores" --memory "$memory" \
    --webui-port 0 --work-dir "$STATE/work/worker-$i" >"$STATE/logs/worker-$i.log" 2>&1 </dev/null &
  echo $! >"$STATE/run/worker-$i.pid"
done

deadline=$((SECONDS + timeout))
while :; do
  n=$(alive_workers)
  [ "${n:-0}" -ge "$workers" ] && break
  if ! pid_alive "$STATE/run/master.pid" "$MASTER_CLASS"; then
    tail -n 20 "$STATE/logs/master.log" >&2
    false  # the ERR trap stops the workers
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "spark-cluster: ${n:-no} of $workers worker(s) alive after ${timeout}s; logs in $STATE/logs" >&2
    false
    exit 1
  fi
  sleep 1
done
trap - ERR INT TERM
echo "$url" >"$STATE/master.url"
echo "$ui_port" >"$STATE/ui.port"
echo "spark-cluster: master $url with $workers worker(s) x $cores core(s) x $memory (web UI http://$HOST:$ui_port, logs $STATE/logs)"
echo "$url"
