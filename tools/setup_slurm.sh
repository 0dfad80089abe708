#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for tests/engine/cluster and for trying
# 'gaussianem train --submit slurm' (docs/cluster.md). Debian/Ubuntu, as root.
#
#   bash tools/setup_slurm.sh            # install, configure, start; wait for the node
#   bash tools/setup_slurm.sh --stop     # stop the daemons this script started (munged too)
#
# What it does (each step skipped when already done, so it can run any number of times):
#   1. apt-get install --no-install-recommends slurmctld slurmd slurm-client munge
#      (Debian 12: SLURM 22.05; 'apt-get update' first only when the install fails)
#   2. /etc/slurm/slurm.conf for one node, this host, addressed as 127.0.0.1: the CPUs
#      and memory 'slurmd -C' reports, partition 'debug' (default), select/cons_tres by
#      core, proctrack/linuxproc, task/none (no cgroups), munge authentication, no
#      accounting database, ReturnToService=2; state in /var/spool/gaussianem-slurm,
#      logs in /var/log/gaussianem-slurm
#   3. the munge key (if the package did not make one), then munged, slurmctld and
#      slurmd as daemons (pid files in /run/gaussianem-slurm)
#   4. waits (at most $SLURM_SETUP_WAIT seconds, default 60) until 'sinfo' shows the node
#      idle, mixed or allocated
# A slurm.conf not written by this script is never touched (the script then stops).
# Exit status 0: SLURM is up; otherwise the last line on stderr says why not (no root,
# no apt-get, the install failed, a daemon did not start ...); the tests skip with it.
set -u

TAG="# written by tools/setup_slurm.sh (GaussianEM)"
CONF=/etc/slurm/slurm.conf
SPOOL=/var/spool/gaussianem-slurm
LOGS=/var/log/gaussianem-slurm
RUNDIR=/run/gaussianem-slurm
WAIT=${SLURM_SETUP_WAIT:-60}
HOST=$(hostname -s)

say() { echo "setup_slurm: $*" >&2; }
fail() { say "cannot set up SLURM: $*"; exit 3; }

node_ready() {
    command -v sinfo >/dev/null 2>&1 || return 1
    local st
    st=$(timeout 10 sinfo -h -n "$HOST" -o %t 2>/dev/null | head -1)
    case "$st" in idle*|mix*|alloc*|comp*) return 0 ;; *) return 1 ;; esac
}

pid_alive() {      # pid file of a daemon this script started
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

stop_daemons() {      # slurmd, slurmctld (and munged with "munged"), if this script started them
    for d in slurmd slurmctld ${1:-}; do
        if pid_alive "$RUNDIR/$d.pid"; then
            say "stopping $d (pid $(cat "$RUNDIR/$d.pid"))"
            kill "$(cat "$RUNDIR/$d.pid")"
            for _ in $(seq 50); do pid_alive "$RUNDIR/$d.pid" || break; sleep 0.2; done
        fi
    done
}

if [ "${1:-}" = "--stop" ]; then
    [ "$(id -u)" = 0 ] || fail "--stop needs root"
    stop_daemons munged
    rm -f "$RUNDIR/munged.pid"
    exit 0
fi

# ---------------------------------------------------------------- already up?
if node_ready && { [ ! -f "$CONF" ] || grep -qF "$TAG" "$CONF"; }; then
    say "SLURM is up: $(sinfo -h -n "$HOST" -o '%P %N %t %c CPUs' | head -1)"
    exit 0
fi
if [ -f "$CONF" ] && ! grep -qF "$TAG" "$CONF"; then
    fail "$CONF exists and was not written by this script; not touching an existing SLURM set-up"
fi
[ "$(id -u)" = 0 ] || fail "needs root (installs packages, starts munged, slurmctld and slurmd); run it as root"

# ---------------------------------------------------------------- 1. packages
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
        || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || fail "no apt-get on this machine (install slurmctld, slurmd, slurm-client and munge by hand)"
    PKGS="slurmctld slurmd slurm-client munge"
    log=$(mktemp)
    say "installing $PKGS (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if ! timeout 300 apt-get install -y -q --no-install-recommends $PKGS >"$log" 2>&1; then
        say "install failed; running apt-get update and trying again"
        timeout 180 apt-get update -q >>"$log" 2>&1
        if ! timeout 300 apt-get install -y -q --no-install-recommends $PKGS >>"$log" 2>&1; then
            tail -5 "$log" >&2
            fail "apt-get install $PKGS failed (log: $log)"
        fi
    fi
    rm -f "$log"
fi
for c in slurmctld slurmd sbatch squeue scancel sinfo munged; do
    command -v $c >/dev/null || fail "$c is missing after the install"
done

# ---------------------------------------------------------------- 2. slurm.conf
NODE=$(slurmd -C 2>/dev/null | grep '^NodeName=' | head -1)
[ -n "$NODE" ] || fail "'slurmd -C' did not describe this node"
NODE=$(echo "$NODE" | sed -E "s/^NodeName=[^ ]+/NodeName=$HOST NodeAddr=127.0.0.1/")
mkdir -p /etc/slurm "$SPOOL/ctld" "$SPOOL/d" "$LOGS" "$RUNDIR"
NEW=$(mktemp)
cat >"$NEW" <<EOF
$TAG
# one node ($HOST, addressed as 127.0.0.1), partition 'debug'; no cgroups, no accounting database
ClusterName=gaussianem
SlurmctldHost=$HOST(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=$RUNDIR/slurmctld.pid
SlurmdPidFile=$RUNDIR/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
InactiveLimit=0
KillWait=30
MinJobAge=600
SlurmdTimeout=300
$NODE State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
CHANGED=0
if ! cmp -s "$NEW" "$CONF"; then
    cp "$NEW" "$CONF"
    chmod 644 "$CONF"
    CHANGED=1
    say "wrote $CONF"
fi
rm -f "$NEW"

# ---------------------------------------------------------------- 3. munge, daemons
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile=/etc/munge/munge.key --force
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        fi
        say "created /etc/munge/munge.key"
    fi
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge 2>/dev/null
    chmod 700 /etc/munge; chmod 400 /etc/munge/munge.key; chmod 755 /run/munge
    say "starting munged"
    if id munge >/dev/null 2>&1 && command -v runuser >/dev/null; then
        runuser -u munge -- munged || fail "munged did not start"
    else
        munged --force || fail "munged did not start"
    fi
    for _ in $(seq 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || fail "munge does not work (munged started, 'munge -n | unmunge' fails)"
    [ -s /run/munge/munged.pid ] && cp /run/munge/munged.pid "$RUNDIR/munged.pid"    # for --stop
fi

[ "$CHANGED" = 1 ] && stop_daemons          # a new configuration: restart what this script started
if ! pid_alive "$RUNDIR/slurmctld.pid"; then
    if timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP'; then
        fail "a slurmctld not started by this script is running; stop it first"
    fi
    say "starting slurmctld (log $LOGS/slurmctld.log)"
    slurmctld || fail "slurmctld did not start: $(tail -3 "$LOGS/slurmctld.log" 2>/dev/null)"
fi
for _ in $(seq 40); do timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP' && break; sleep 0.5; done
timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP' \
    || fail "slurmctld is not answering: $(tail -3 "$LOGS/slurmctld.log" 2>/dev/null)"
if ! pid_alive "$RUNDIR/slurmd.pid"; then
    say "starting slurmd (log $LOGS/slurmd.log)"
    slurmd || fail "slurmd did not start: $(tail -3 "$LOGS/slurmd.log" 2>/dev/null)"
fi

# ---------------------------------------------------------------- 4. wait for the node
deadline=$((SECONDS + WAIT))
while ! node_ready; do
    st=$(timeout 10 sinfo -h -n "$HOST" -o %t 2>/dev/null | head -1)
    case "$st" in down*|drain*|drng*|fail*)
        timeout 10 scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 ;;
    esac
    if [ $SECONDS -ge $deadline ]; then
        tail -3 "$LOGS/slurmd.log" >&2 2>/dev/null
        fail "node $HOST is not idle after ${WAIT}s (sinfo: '${st:-no answer}'; logs in $LOGS)"
    fi
    sleep 1
done
say "SLURM is up: $(sinfo -h -n "$HOST" -o '%P %N %t %c CPUs' | head -1)"
