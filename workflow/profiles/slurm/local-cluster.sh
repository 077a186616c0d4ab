#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, from Debian's packages, to try (and test) the SLURM profile:
#
#   workflow/profiles/slurm/local-cluster.sh start     # munge, mariadb + slurmdbd (sacct), slurmctld, slurmd
#   eval "$(workflow/profiles/slurm/local-cluster.sh env)"   # sinfo, sbatch, sacct ... of this cluster on PATH
#   python workflow/profiles/slurm/fit.py /tmp/slurm-2cpu   # the profile, per-job CPUs/memory capped to the node
#   snakemake all --workflow-profile /tmp/slurm-2cpu
#   workflow/profiles/slurm/local-cluster.sh status
#   workflow/profiles/slurm/local-cluster.sh stop      # stops the daemons and removes the state folder
#
# Needs: apt-get install slurm-wlm slurmdbd munge mariadb-server (the script says so when one is missing;
# `start --install` installs them, as root). Every file it makes (configs, munge key and socket, spool,
# logs, the database) lives in one folder, VITEDGE_SLURM_HOME (default ~/.cache/vitedge-slurm), and
# every daemon runs there with a pid file; nothing is written under /etc, /var or /run. The daemons run
# as the invoking user (SlurmUser and SlurmdUser are that user; root in a container). Partitions are the
# profile's: `cpu` (default) and `gpu`, both on this one node, which advertises one GRES `gpu` (a
# plain file, no device behind it) so that the profile's --gpus requests are scheduled and accounted as on a
# real site; jobs there run on the CPU. proctrack/linuxproc and task/none: no cgroups needed.
# Ports (VITEDGE_SLURM_PORT, default 16817): slurmctld +0, slurmd +1, slurmdbd +2, mariadb +3 (127.0.0.1).
set -euo pipefail

HOME_DIR=${VITEDGE_SLURM_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/vitedge-slurm}
PORT=${VITEDGE_SLURM_PORT:-16817}
CLUSTER=${VITEDGE_SLURM_CLUSTER:-vitedge}
ME=$(id -un)
NODE=$(hostname -s)
CONF=$HOME_DIR/etc/slurm.conf
MUNGE_SOCKET=$HOME_DIR/munge/munge.socket
DB_SOCKET=$HOME_DIR/mysql/mysqld.sock
PATH=$PATH:/usr/sbin:/sbin

say() { echo "local-cluster: $*" >&2; }
die() { say "$*"; exit 1; }

pid_alive() {  # pid_alive FILE: the pid in FILE is a running process
  [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

wait_for() {  # wait_for SECONDS WHAT CMD...: until CMD succeeds
  local secs=$1 what=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || { say "$what did not come up in ${secs}s; its log:"; tail -n 30 "$HOME_DIR/log/$what.log" >&2 2>/dev/null || true; return 1; }
    sleep 0.5
  done
}

PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)
COMMANDS=(slurmctld slurmd slurmdbd munged mariadbd mariadb-install-db sinfo sacctmgr)

missing_commands() {
  local c out=()
  for c in "${COMMANDS[@]}"; do command -v "$c" >/dev/null || out+=("$c"); done
  echo "${out[*]}"
}

install_packages() {
  [[ -z $(missing_commands) ]] && return
  [[ $(id -u) == 0 ]] || die "missing: $(missing_commands); install them with: sudo apt-get install ${PACKAGES[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # the packages' own services must not start (this script runs its own daemons in $HOME_DIR)
  local policy=/usr/sbin/policy-rc.d made_policy=
  if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1; fi
  apt-get update -q -o Acquire::Retries=3
  apt-get install -y -q --no-install-recommends -o Acquire::Retries=3 "${PACKAGES[@]}"
  [[ -n $made_policy ]] && rm -f "$policy"
  return 0
}

write_configs() {
  local cpus mem_mb
  cpus=$(nproc)
  # what slurmd will report (MemTotal), less 5% so a small drift never drains the node
  mem_mb=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.95}' /proc/meminfo)
  mkdir -p "$HOME_DIR"/{etc,munge,run,log,spool/slurmctld,spool/slurmd,mysql}
  chmod 755 "$HOME_DIR"; chmod 711 "$HOME_DIR/munge"  # munged: clients need x on the socket's folder
  cat >"$CONF" <<EOF
# written by workflow/profiles/slurm/local-cluster.sh: a one-node cluster for trying the SLURM profile
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=$ME
SlurmdUser=$ME
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# sacct, which the executor plugin asks for job states, reads slurmdbd
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$((PORT + 2))
# the munge socket for talking to slurmdbd (sacct, sacctmgr, slurmctld): this cluster's own munged
AccountingStoragePass=$MUNGE_SOCKET
AccountingStorageTRES=gres/gpu
# the plugin names each job after the run and puts the rule in its comment: keep it for sacct
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
MinJobAge=300
KillWait=10
SlurmctldTimeout=30
SlurmdTimeout=60
SlurmctldPidFile=$HOME_DIR/run/slurmctld.pid
SlurmdPidFile=$HOME_DIR/run/slurmd.pid
SlurmctldLogFile=$HOME_DIR/log/slurmctld.log
SlurmdLogFile=$HOME_DIR/log/slurmd.log
StateSaveLocation=$HOME_DIR/spool/slurmctld
SlurmdSpoolDir=$HOME_DIR/spool/slurmd
PlugStackConfig=$HOME_DIR/etc/plugstack.conf
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE MaxTime=INFINITE State=UP
EOF
  # one GPU that is a plain file (slurmd registers no GRES gpu without a File): --gpus=1 is scheduled
  # and accounted as on a real site, and the job gets no device (CUDA_VISIBLE_DEVICES is empty)
  : >"$HOME_DIR/etc/fake-gpu0"
  echo "NodeName=$NODE Name=gpu File=$HOME_DIR/etc/fake-gpu0" >"$HOME_DIR/etc/gres.conf"
  : >"$HOME_DIR/etc/plugstack.conf"
  cat >"$HOME_DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$((PORT + 2))
SlurmUser=$ME
LogFile=$HOME_DIR/log/slurmdbd.log
PidFile=$HOME_DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((PORT + 3))
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$HOME_DIR/etc/slurmdbd.conf"
  # The client commands, bound to this cluster's config. SLURM_CONF alone is not enough: the executor
  # plugin's job step (snakemake-executor-plugin-slurm-jobstep 0.6) drops every SLURM_* variable but
  # the job's identity before its nested `srun`, which then looks for /etc/slurm/slurm.conf. Jobs
  # inherit PATH (sbatch --export=ALL), so the srun on PATH inside a job is this wrapper.
  mkdir -p "$HOME_DIR/bin"
  local c
  for c in sinfo squeue sbatch srun scancel scontrol sacct sacctmgr salloc sstat; do
    printf '#!/bin/sh\n# %s for the cluster of workflow/profiles/slurm/local-cluster.sh\nSLURM_CONF=%q exec %q "$@"\n' \
      "$c" "$CONF" "$(PATH=${PATH#"$HOME_DIR/bin:"} command -v "$c")" >"$HOME_DIR/bin/$c"
    chmod +x "$HOME_DIR/bin/$c"
  done
}

start_munge() {
  pid_alive "$HOME_DIR/run/munged.pid" && return
  [[ -s $HOME_DIR/munge/munge.key ]] || { dd if=/dev/urandom of="$HOME_DIR/munge/munge.key" bs=1024 count=1 status=none; chmod 400 "$HOME_DIR/munge/munge.key"; }
  munged --force --key-file="$HOME_DIR/munge/munge.key" --socket="$MUNGE_SOCKET" --pid-file="$HOME_DIR/run/munged.pid" \
    --log-file="$HOME_DIR/log/munged.log" --seed-file="$HOME_DIR/munge/munged.seed"
  wait_for 20 munged munge --socket="$MUNGE_SOCKET" -n
}

sql() { mariadb --socket="$DB_SOCKET" -u "$ME" -e "$1"; }

start_mariadb() {
  pid_alive "$HOME_DIR/run/mariadb.pid" && return
  if [[ ! -d $HOME_DIR/mysql/data/mysql ]]; then
    mariadb-install-db --no-defaults --user="$ME" --datadir="$HOME_DIR/mysql/data" --auth-root-authentication-method=socket \
      --skip-test-db >"$HOME_DIR/log/mariadb-install.log" 2>&1 || { tail -n 30 "$HOME_DIR/log/mariadb-install.log" >&2; return 1; }
    local fresh=1
  fi
  # --no-defaults: nothing from /etc/mysql; TCP on 127.0.0.1 only (slurmdbd), the socket for this script
  nohup mariadbd --no-defaults --user="$ME" --datadir="$HOME_DIR/mysql/data" --socket="$DB_SOCKET" \
    --pid-file="$HOME_DIR/run/mariadb.pid" --bind-address=127.0.0.1 --port=$((PORT + 3)) \
    --log-error="$HOME_DIR/log/mariadb.log" --innodb-buffer-pool-size=64M --innodb-log-file-size=16M \
    --skip-name-resolve >/dev/null 2>&1 &
  wait_for 60 mariadb sql "SELECT 1"
  if [[ -n ${fresh:-} ]]; then
    sql "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
         CREATE DATABASE IF NOT EXISTS slurm_acct_db;
         GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
  fi
}

start_slurmdbd() {
  pid_alive "$HOME_DIR/run/slurmdbd.pid" && return
  SLURM_CONF=$CONF slurmdbd 2>>"$HOME_DIR/log/slurmdbd.log"
  wait_for 60 slurmdbd env SLURM_CONF="$CONF" sacctmgr -n list cluster
  # the cluster (and an account for the invoking user) must exist before slurmctld registers
  if [[ -z $(SLURM_CONF=$CONF sacctmgr -n -P list cluster "$CLUSTER" format=cluster) ]]; then
    SLURM_CONF=$CONF sacctmgr -i add cluster "$CLUSTER" >/dev/null
  fi
  if [[ -z $(SLURM_CONF=$CONF sacctmgr -n -P list user "$ME" format=user) ]]; then
    SLURM_CONF=$CONF sacctmgr -i add account vitedge cluster="$CLUSTER" description=vitedge organization=vitedge >/dev/null
    SLURM_CONF=$CONF sacctmgr -i add user "$ME" account=vitedge cluster="$CLUSTER" >/dev/null
  fi
}

start_slurm() {
  if ! pid_alive "$HOME_DIR/run/slurmctld.pid"; then
    SLURM_CONF=$CONF slurmctld -f "$CONF" 2>>"$HOME_DIR/log/slurmctld.log"
  fi
  wait_for 60 slurmctld env SLURM_CONF="$CONF" scontrol ping
  if ! pid_alive "$HOME_DIR/run/slurmd.pid"; then
    SLURM_CONF=$CONF slurmd -f "$CONF" -N "$NODE" 2>>"$HOME_DIR/log/slurmd.log"
  fi
  # a node drained by an earlier configuration (e.g. another CPU count) is taken back
  if SLURM_CONF=$CONF sinfo -h -n "$NODE" -o %t 2>/dev/null | grep -qE '^(drain|drng|inval)'; then
    SLURM_CONF=$CONF scontrol update nodename="$NODE" state=resume 2>/dev/null || true
  fi
  # the node is up when it is idle (or already running jobs)
  wait_for 60 slurmd bash -c "SLURM_CONF='$CONF' sinfo -h -n '$NODE' -o %t | grep -qE '^(idle|mix|alloc)'"
}

cmd_start() {
  [[ ${1:-} == --install ]] && install_packages
  local missing
  missing=$(missing_commands)
  [[ -z $missing ]] || die "missing: $missing; install them with: sudo apt-get install ${PACKAGES[*]} (or: $0 start --install, as root)"
  write_configs
  start_munge
  start_mariadb
  start_slurmdbd
  start_slurm
  say "up: $CLUSTER on $NODE ($(nproc) CPUs; partitions cpu, gpu), state in $HOME_DIR"
  say "use it with: eval \"\$($0 env)\""
}

stop_pidfile() {  # stop_pidfile NAME: TERM the daemon, KILL it after 30 s
  local f=$HOME_DIR/run/$1.pid pid
  pid_alive "$f" || return 0
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  say "$1 ($pid) did not stop in 30 s: killing it"
  kill -9 "$pid" 2>/dev/null || true
}

cmd_stop() {
  if [[ -f $CONF ]] && pid_alive "$HOME_DIR/run/slurmctld.pid"; then
    # jobs must not outlive the cluster: cancel them and wait until their steps have ended
    SLURM_CONF=$CONF scancel --user="$ME" 2>/dev/null || true
    for _ in $(seq 60); do
      [[ -z $(SLURM_CONF=$CONF squeue -h -u "$ME" -o %i 2>/dev/null) ]] && break
      sleep 0.5
    done
  fi
  # the order start reversed: slurmd, slurmctld, slurmdbd, mariadb, munge
  stop_pidfile slurmd
  stop_pidfile slurmctld
  stop_pidfile slurmdbd
  stop_pidfile mariadb
  stop_pidfile munged
  if [[ ${1:-} != --keep ]]; then
    rm -rf "$HOME_DIR"
    say "stopped; removed $HOME_DIR"
  else
    say "stopped; state kept in $HOME_DIR"
  fi
}

cmd_status() {
  local d up=0
  for d in munged mariadb slurmdbd slurmctld slurmd; do
    if pid_alive "$HOME_DIR/run/$d.pid"; then echo "$d: running (pid $(cat "$HOME_DIR/run/$d.pid"))"; up=$((up + 1))
    else echo "$d: stopped"; fi
  done
  if ((up == 5)); then
    SLURM_CONF=$CONF sinfo -o "%P %a %D %t %c %m %G"
    return 0
  fi
  return 1
}

case ${1:-} in
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  restart) shift; cmd_stop --keep; cmd_start "$@" ;;
  status) cmd_status ;;
  env) echo "export SLURM_CONF=$CONF PATH=$HOME_DIR/bin:\${PATH#$HOME_DIR/bin:}" ;;
  *) echo "usage: $0 start [--install] | stop [--keep] | restart | status | env" >&2; exit 2 ;;
esac
