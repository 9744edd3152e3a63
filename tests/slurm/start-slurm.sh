#!/usr/bin/env bash
# start-slurm.sh -- a one-node SLURM cluster on localhost for lokiml's SLURM tests.
#
# Debian 12 (Slurm 22.05 from Debian), run as root, no systemd needed. It installs
# the packages when they are missing, writes the config, and starts munged,
# MariaDB + slurmdbd (accounting, so that `sacct` works: the Snakemake SLURM
# plugin polls job states with sacct), slurmctld and slurmd. The node has one
# fake GPU (gres/gpu with File=/dev/null), so that `--gpus=1` jobs are scheduled
# (a second one would need a second device file: slurmd rejects the same file twice).
# Account `lokiml` (the default account of root) on partition `debug`.
#
# Idempotent: a second run starts only what is not running, and restarts the
# SLURM daemons only when the generated config changed. Every daemon it starts
# is recorded in $STATE_DIR/started; tests/slurm/stop-slurm.sh stops exactly
# those, by PID file. It refuses to overwrite an /etc/slurm/slurm.conf it did
# not write: never run it on a machine that belongs to a real cluster.
#
# Environment (defaults in brackets):
#   LOKIML_SLURM_ACCOUNT [lokiml]   LOKIML_SLURM_PARTITION [debug]
#   LOKIML_SLURM_CLUSTER [lokiml]   LOKIML_SLURM_STATE [/run/lokiml-slurm]
set -euo pipefail

ACCOUNT=${LOKIML_SLURM_ACCOUNT:-lokiml}
PARTITION=${LOKIML_SLURM_PARTITION:-debug}
CLUSTER=${LOKIML_SLURM_CLUSTER:-lokiml}
STATE_DIR=${LOKIML_SLURM_STATE:-/run/lokiml-slurm}
NODE=localhost            # with `slurmd -N localhost`: independent of the machine's hostname
DB_PASS=lokiml-slurmdb    # MariaDB password of the slurm user; the DB only listens on localhost
MARK="# written by lokiml tests/slurm/start-slurm.sh"

log() { echo "[start-slurm $(date +%T)] $*" >&2; }
die() {
  log "ERROR: $*"
  for f in /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log /var/log/slurm/slurmdbd.log \
    /var/log/slurm/mariadbd.log; do
    [[ -s $f ]] && { echo "--- last lines of $f" >&2; tail -n 15 "$f" >&2; }
  done
  exit 1
}
alive() { # alive <pidfile> <process name>: the PID file names a running process of that name
  local pid
  [[ -s $1 ]] || return 1
  pid=$(cat "$1")
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]]
}
started() { echo "$1 $2" >>"$STATE_DIR/started"; } # record: stop-slurm.sh stops it
wait_for() { # wait_for <seconds> <what> <command...>
  local seconds=$1 what=$2 i
  shift 2
  for ((i = 0; i < seconds * 4; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  die "timed out after ${seconds}s waiting for $what"
}
write_if_changed() { # write_if_changed <file> <content>: returns 0 when it wrote
  [[ "$(cat "$1" 2>/dev/null)" == "$2" ]] && return 1
  printf '%s\n' "$2" >"$1"
}

[[ $(id -u) == 0 ]] || die "must run as root"
mkdir -p "$STATE_DIR"
touch "$STATE_DIR/started"

# ------------------------------------------------------------------ packages
packages=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  # The postinst scripts cannot start services without systemd: harmless, we start them below.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$STATE_DIR/apt.log" 2>&1 ||
    { tail -n 20 "$STATE_DIR/apt.log" >&2; die "apt-get install failed"; }
fi

# ------------------------------------------------------------------ config
if [[ -e /etc/slurm/slurm.conf ]] && ! grep -qxF "$MARK" /etc/slurm/slurm.conf; then
  die "/etc/slurm/slurm.conf exists and was not written by this script: not touching a real cluster's config"
fi
mkdir -p /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
chown slurm:slurm /var/lib/slurm/slurmctld /var/log/slurm

# Topology and memory as slurmd detects them; RealMemory a little lower, so the node is never "low memory".
hw=$(slurmd -C | head -n 1)
hw_field() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$hw"; }
CPUS=$(hw_field CPUs)
MEM=$(hw_field RealMemory)
[[ -n $CPUS && -n $MEM ]] || die "cannot read CPUs and RealMemory from 'slurmd -C': $hw"
MEM=$((MEM * 9 / 10))
topology="CPUs=$CPUS Boards=$(hw_field Boards) SocketsPerBoard=$(hw_field SocketsPerBoard)"
topology+=" CoresPerSocket=$(hw_field CoresPerSocket) ThreadsPerCore=$(hw_field ThreadsPerCore)"

slurm_conf="$MARK
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
# No cgroups: works in containers and VMs without a delegated cgroup tree.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/lib/slurm/slurmd
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job that gives no --mem gets the whole node and everything runs one at a time.
DefMemPerCPU=$((MEM / CPUS))
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageEnforce=associations
# Account GPUs too (sacct AllocTRES/ReqTRES show gres/gpu), and keep the job comment
# (the Snakemake plugin puts the rule name there).
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
# Finished jobs stay visible in squeue for an hour (so --slurm-status-command squeue works too).
MinJobAge=3600
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
Waittime=0
GresTypes=gpu
NodeName=$NODE NodeHostname=localhost NodeAddr=127.0.0.1 $topology RealMemory=$MEM Gres=gpu:1 State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP"

dbd_conf="AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=slurm
PidFile=/run/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db"

slurm_changed=0
write_if_changed /etc/slurm/slurm.conf "$slurm_conf" && slurm_changed=1
# A GPU without File= is dropped by slurmd, and the node drains ("gres/gpu count reported lower").
write_if_changed /etc/slurm/gres.conf "NodeName=$NODE Name=gpu File=/dev/null" && slurm_changed=1
dbd_changed=0
write_if_changed /etc/slurm/slurmdbd.conf "$dbd_conf" && dbd_changed=1
chown slurm:slurm /etc/slurm/slurmdbd.conf
chmod 600 /etc/slurm/slurmdbd.conf
((slurm_changed)) && log "wrote /etc/slurm/slurm.conf: $CPUS CPUs, RealMemory=$MEM MB, 1 fake GPU"

stop_if_changed() { # stop_if_changed <changed> <pidfile> <name>: a daemon must reread its new config
  local pid
  (($1)) && alive "$2" "$3" || return 0
  pid=$(cat "$2")
  log "config changed: stopping $3"
  kill "$pid"
  wait_for 30 "$3 to exit" bash -c "! kill -0 $pid"
}
stop_if_changed $slurm_changed /run/slurmd.pid slurmd
stop_if_changed $slurm_changed /run/slurmctld.pid slurmctld
stop_if_changed $dbd_changed /run/slurmdbd.pid slurmdbd

# ------------------------------------------------------------------ munge
if [[ ! -s /etc/munge/munge.key ]]; then # normally made by the package's postinst
  install -d -o munge -g munge -m 700 /etc/munge
  mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
fi
if ! alive /run/munge/munged.pid munged; then
  log "starting munged"
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged || die "munged did not start"
  wait_for 10 "munged's PID file" test -s /run/munge/munged.pid
  started munged /run/munge/munged.pid
fi
wait_for 20 "munge" bash -c 'munge -n | unmunge'

# ------------------------------------------------------------------ MariaDB + slurmdbd
mkdir -p /run/mysqld
chown mysql:mysql /run/mysqld
[[ -d /var/lib/mysql/mysql ]] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
if ! mysqladmin ping >/dev/null 2>&1; then
  log "starting mariadbd"
  setsid /usr/sbin/mariadbd --user=mysql --pid-file=/run/mysqld/mysqld.pid --bind-address=127.0.0.1 \
    --innodb-buffer-pool-size=256M --innodb-lock-wait-timeout=900 \
    >/var/log/slurm/mariadbd.log 2>&1 </dev/null &
  wait_for 60 "mariadbd" mysqladmin ping
  started mariadbd /run/mysqld/mysqld.pid
fi
mysql <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
if ! alive /run/slurmdbd.pid slurmdbd; then
  log "starting slurmdbd"
  slurmdbd || die "slurmdbd did not start"
  wait_for 10 "slurmdbd's PID file" test -s /run/slurmdbd.pid
  started slurmdbd /run/slurmdbd.pid
fi
wait_for 60 "slurmdbd" sacctmgr -n list cluster
# The cluster must exist in the DB before slurmctld registers with it.
sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null

# ------------------------------------------------------------------ slurmctld + slurmd
if ! alive /run/slurmctld.pid slurmctld; then
  log "starting slurmctld"
  slurmctld -c || die "slurmctld did not start" # -c: no jobs, no DRAIN state left from an earlier run
  wait_for 10 "slurmctld's PID file" test -s /run/slurmctld.pid
  started slurmctld /run/slurmctld.pid
fi
wait_for 30 "slurmctld" bash -c 'scontrol ping | grep -q UP'
if ! alive /run/slurmd.pid slurmd; then
  log "starting slurmd"
  slurmd -N "$NODE" || die "slurmd did not start"
  wait_for 10 "slurmd's PID file" test -s /run/slurmd.pid
  started slurmd /run/slurmd.pid
fi
wait_for 30 "node $NODE to register" bash -c "sinfo -h -n $NODE -o %t | grep -qvE '^(unk|n/a|down)\*?\$'"
if sinfo -h -n "$NODE" -o %t | grep -qE 'drain|drng|down|inval|fail'; then
  log "node $NODE is $(sinfo -h -n $NODE -o '%t: %E'); resuming it"
  scontrol update nodename="$NODE" state=resume || true
fi
wait_for 30 "node $NODE to be usable" bash -c "sinfo -h -n $NODE -o %t | grep -qE '^(idle|mix|alloc)\$'"

# ------------------------------------------------------------------ account
sacctmgr -n -P list account format=account | grep -qx "$ACCOUNT" ||
  sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description=lokiml-tests Organization=lokiml >/dev/null
# root already exists (account root) once the cluster is registered: check the (user, account) pair.
sacctmgr -n -P list assoc cluster="$CLUSTER" account="$ACCOUNT" user=root format=user | grep -qx root ||
  sacctmgr -i add user root Account="$ACCOUNT" Cluster="$CLUSTER" >/dev/null
sacctmgr -i modify user root set DefaultAccount="$ACCOUNT" >/dev/null || true
# slurmctld learns new associations from slurmdbd asynchronously: wait until a job with -A is accepted.
wait_for 60 "a job with account $ACCOUNT to run" timeout 20 srun -A "$ACCOUNT" -p "$PARTITION" -N1 -n1 -t 1 true
timeout 30 srun -A "$ACCOUNT" -p "$PARTITION" -t 1 --gpus=1 true || die "a job on the fake GPU did not run"

log "SLURM is up: cluster $CLUSTER, partition $PARTITION, account $ACCOUNT, 1 fake GPU"
sinfo -o "%P %a %D %t %N %c %m %G" >&2
