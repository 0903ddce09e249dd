#!/usr/bin/env bash
# Local Prefect stack of depthseg-fas: API server (SQLite in $PREFECT_HOME), a process work pool,
# the deployments of prefect.yaml, and a worker. Idempotent; `down` stops only what `up` started.
#
#   scripts/stack.sh up|down|status|env
#
# Settings (environment): PREFECT_HOME (default <project>/.prefect), DEPTHSEG_PREFECT_PORT (4200),
# VENV (.venv).
set -euo pipefail
PROJECT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$PROJECT"
VENV="${VENV:-$PROJECT/.venv}"
export PREFECT_HOME="${PREFECT_HOME:-$PROJECT/.prefect}"
PORT="${DEPTHSEG_PREFECT_PORT:-4200}"
POOL=depthseg-local  # the pool named in prefect.yaml
export PREFECT_API_URL="http://127.0.0.1:${PORT}/api"
export DEPTHSEG_PROJECT_DIR="$PROJECT"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_UI_API_URL="$PREFECT_API_URL"
PREFECT="$VENV/bin/prefect"
RUN="$PREFECT_HOME/run"
mkdir -p "$RUN"

write_env() {
  cat >"$PREFECT_HOME/env" <<ENV
# source this file to use the local depthseg-fas Prefect stack from a shell
export PREFECT_HOME="$PREFECT_HOME"
export PREFECT_API_URL="$PREFECT_API_URL"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PATH="$VENV/bin:\$PATH"
ENV
}

alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

healthy() { curl -sf "$PREFECT_API_URL/health" >/dev/null 2>&1; }

start_bg() {  # name, command...: own session so `down` can stop the whole group
  local name=$1; shift
  setsid nohup "$@" >"$PREFECT_HOME/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

stop() {  # name: TERM the process group, escalate to KILL
  local name=$1 pid
  [ -f "$RUN/$name.pid" ] || return 0
  pid=$(cat "$RUN/$name.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN/$name.pid"
  echo "stopped $name (pid $pid)"
}

up() {
  write_env
  if alive server && healthy; then
    echo "server already running (pid $(cat "$RUN/server.pid"))"
  else
    if healthy; then
      echo "error: another Prefect server answers on port $PORT; set DEPTHSEG_PREFECT_PORT" >&2; exit 1
    fi
    start_bg server "$PREFECT" server start --host 127.0.0.1 --port "$PORT"
    echo -n "starting Prefect server on 127.0.0.1:$PORT "
    for _ in $(seq 1 120); do healthy && break; sleep 1; echo -n .; done
    echo
    healthy || { echo "error: server did not become healthy; see $PREFECT_HOME/server.log" >&2; tail -20 "$PREFECT_HOME/server.log" >&2; exit 1; }
  fi
  "$PREFECT" work-pool inspect "$POOL" >/dev/null 2>&1 || "$PREFECT" work-pool create "$POOL" --type process >/dev/null
  "$PREFECT" concurrency-limit inspect gpu >/dev/null 2>&1 || "$PREFECT" concurrency-limit create gpu 1 >/dev/null
  "$PREFECT" --no-prompt deploy --all >"$PREFECT_HOME/deploy.log" 2>&1 \
    || { echo "error: prefect deploy failed; see $PREFECT_HOME/deploy.log" >&2; tail -30 "$PREFECT_HOME/deploy.log" >&2; exit 1; }
  echo "deployments: $(grep -o "'[a-z-]*/[a-z-]*'" "$PREFECT_HOME/deploy.log" | sort -u | tr '\n' ' ')"
  if alive worker; then
    echo "worker already running (pid $(cat "$RUN/worker.pid"))"
  else
    start_bg worker "$PREFECT" worker start --pool "$POOL" --type process
    echo "worker started (pid $(cat "$RUN/worker.pid")), log $PREFECT_HOME/worker.log"
  fi
  echo "Prefect UI: http://127.0.0.1:$PORT   (shell: source $PREFECT_HOME/env)"
}

down() { stop worker; stop server; }

status() {
  for n in server worker; do
    if alive "$n"; then echo "$n: running (pid $(cat "$RUN/$n.pid"))"; else echo "$n: stopped"; fi
  done
  if healthy; then echo "api: $PREFECT_API_URL healthy"; else echo "api: $PREFECT_API_URL not answering"; fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) write_env; cat "$PREFECT_HOME/env" ;;
  *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
