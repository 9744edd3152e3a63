#!/usr/bin/env bash
# stop-slurm.sh -- stop the daemons that tests/slurm/start-slurm.sh started, newest first,
# by their PID files (never by process name); daemons it found already running are left alone.
# Safe to run when nothing runs. The packages, config and accounting DB stay, so the next
# start takes seconds.
set -uo pipefail

STATE_DIR=${LOKIML_SLURM_STATE:-/run/lokiml-slurm}
[[ -s $STATE_DIR/started ]] || exit 0

stop() { # stop <process name> <pidfile>
  local name=$1 pidfile=$2 pid i
  [[ -s $pidfile ]] || return 0
  pid=$(cat "$pidfile")
  # The PID must still belong to that daemon: never signal a process that reused the number.
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]] || return 0
  echo "[stop-slurm] stopping $name (pid $pid)" >&2
  kill "$pid"
  for ((i = 0; i < 120; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.25
  done
  echo "[stop-slurm] $name did not exit within 30 s: SIGKILL" >&2
  kill -9 "$pid"
}

tac "$STATE_DIR/started" | while read -r name pidfile; do stop "$name" "$pidfile"; done
rm -f "$STATE_DIR/started"
