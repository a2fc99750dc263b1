#!/usr/bin/env bash
# Runs unimo_jax on GPU hosts: one machine with several GPUs, or several machines joined through a
# coordinator (jax.distributed), one process per machine driving all its GPUs.
#
#   launch/gpu.sh --config=configs/pretrain.py:base --workdir=/data/runs/base -- --config.steps=1000
#   launch/gpu.sh --config=configs/pretrain.py:base --workdir=/shared/runs/base \
#       --hosts=gpu-a,gpu-b --coordinator=gpu-a:12355 [--remote-dir=~/unimo_jax] [--dry-run]
#
# Every flag also reads an environment variable (flag wins): CONFIG, WORKDIR, GPUS, HOSTS,
# COORDINATOR, REMOTE_DIR, PYTHON, RESTARTS. Arguments after `--` are passed to unimo_jax.main
# unchanged. --restarts=N runs the job again (resuming from the workdir) after a failure other
# than a config error (exit 2), up to N times; a host that fails, or that the others report lost,
# is named.
# With --hosts, each host needs the project installed at --remote-dir and the workdir must be a
# path every host can write (a shared file system or gs://); logs stream here, each line
# prefixed with its host, and into unimo-<host>.log.
set -euo pipefail

# shellcheck source=launch/lib.sh
source "$(dirname "$0")/lib.sh"

CONFIG="${CONFIG:-}" WORKDIR="${WORKDIR:-}" GPUS="${GPUS:-}" HOSTS="${HOSTS:-}"
COORDINATOR="${COORDINATOR:-}" REMOTE_DIR="${REMOTE_DIR:-~/unimo_jax}" PYTHON="${PYTHON:-python3}"
RESTARTS="${RESTARTS:-0}" DRY_RUN=0
EXTRA=()
while (($#)); do
  case "$1" in
    --config=*) CONFIG="${1#*=}" ;;
    --workdir=*) WORKDIR="${1#*=}" ;;
    --gpus=*) GPUS="${1#*=}" ;;
    --hosts=*) HOSTS="${1#*=}" ;;
    --coordinator=*) COORDINATOR="${1#*=}" ;;
    --remote-dir=*) REMOTE_DIR="${1#*=}" ;;
    --python=*) PYTHON="${1#*=}" ;;
    --restarts=*) RESTARTS="${1#*=}" ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown argument '$1' (overrides for unimo_jax.main go after --); see --help" ;;
  esac
  shift
done

require CONFIG WORKDIR
require_config_spec "$CONFIG"
[[ "$RESTARTS" =~ ^[0-9]+$ ]] || die "--restarts: expected a number, found '$RESTARTS'"

main_args=(-m unimo_jax.main "--config=$CONFIG" "--workdir=$WORKDIR" "${EXTRA[@]+"${EXTRA[@]}"}")

one_machine() {
  if [[ -n "$GPUS" ]]; then
    run env CUDA_VISIBLE_DEVICES="$GPUS" "$PYTHON" "${main_args[@]}"
  else
    run "$PYTHON" "${main_args[@]}"
  fi
}

if [[ -z "$HOSTS" ]]; then  # one machine: one process sees every (selected) GPU
  [[ -z "$COORDINATOR" ]] || die "--coordinator needs --hosts (the machines to start)"
  run_with_restarts one_machine
  exit $?
fi

[[ -n "$COORDINATOR" ]] || die "--hosts needs --coordinator=HOST:PORT (process 0's address)"
[[ "$COORDINATOR" == *:* ]] || die "--coordinator: expected HOST:PORT, found '$COORDINATOR'"
IFS=, read -r -a hosts <<<"$HOSTS"
count=${#hosts[@]}

# Starts one process per host; returns 2 if any host reported a config error, else the first
# other failure's code; names each host that failed or was reported lost.
every_host() {
  local i host remote pids=() status=0 rc logs=()
  for i in "${!hosts[@]}"; do
    host="${hosts[$i]}"
    remote="cd $REMOTE_DIR && $(printf '%q ' "$PYTHON" "${main_args[@]}")"
    remote+="--config.distributed.coordinator_address=$COORDINATOR"
    remote+=" --config.distributed.num_processes=$count --config.distributed.process_id=$i"
    if ((DRY_RUN)); then
      run ssh "$host" "$remote"
    else
      # shellcheck disable=SC2029  # the command is built here on purpose, to run there
      ssh "$host" "$remote" 2>&1 | tee "unimo-$host.log" | sed -u "s/^/[$host] /" &
      pids+=("$!")
      logs+=("unimo-$host.log")
    fi
  done
  for i in "${!pids[@]}"; do
    rc=0
    wait "${pids[$i]}" || rc=$?
    if ((rc != 0)); then
      echo "error: host ${hosts[$i]} (process $i) exited with code $rc" >&2
      if ((rc == 2 || status == 0)); then status=$rc; fi
    fi
  done
  if ((status != 0)); then report_lost_hosts "${logs[@]}" -- "${hosts[@]}"; fi
  return "$status"
}

run_with_restarts every_host
