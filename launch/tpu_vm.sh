#!/usr/bin/env bash
# Runs unimo_jax on a Cloud TPU VM or pod slice: create, install on every worker, (stage data),
# run `python -m unimo_jax.main` on all workers at once, stream the logs, delete.
#
#   launch/tpu_vm.sh --project=P --zone=us-central2-b --accelerator=v4-16 \
#       --bucket=gs://my-bucket --config=configs/pretrain.py:base [--dry-run] \
#       -- --config.data.pair_dir=/tmp/data/pair --config.init_from=gs://my-bucket/roberta
#
# Every flag also reads an environment variable (flag wins): PROJECT, ZONE, ACCELERATOR, RUNTIME,
# TPU_NAME, BUCKET, CONFIG, WORKDIR, RUN_NAME, STAGE_DATA, REPO, RESTARTS. Arguments after `--`
# are passed to unimo_jax.main unchanged (e.g. --config.<field>=<value> overrides).
# A preempted run saves a checkpoint and exits 0; --restarts=N runs it again (resuming from the
# workdir) after any other failure except a config error (exit 2), up to N times, and a worker
# the others report lost is named.
# Multi-host initialisation is automatic on TPU pods (jax.distributed.initialize() discovers the
# workers); the same command runs on every worker (--worker=all).
set -euo pipefail

usage() {
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  cat <<'USAGE'
Flags:
  --project=ID          GCP project (required)
  --zone=ZONE           TPU zone (required)
  --accelerator=TYPE    e.g. v4-8, v4-16, v5litepod-16 (required)
  --bucket=gs://B       where the workdir lives (required)
  --config=FILE:PRESET  e.g. configs/pretrain.py:base (required)
  --runtime=VERSION     TPU software version (default tpu-ubuntu2204-base)
  --name=NAME           TPU VM name (default unimo-<run name>)
  --run-name=NAME       workdir name under the bucket (default: config file name, preset, date)
  --workdir=PATH        full workdir (default <bucket>/unimo_jax/<run name>)
  --stage-data=gs://D   copy this GCS folder to /tmp/data on every worker before running
  --repo=DIR            source tree to install (default: this checkout)
  --keep                do not delete the VM at the end
  --skip-create         use an existing VM of that name
  --restarts=N          run again after a failure (not a config error), up to N times
  --dry-run             print every command instead of running it
USAGE
}

# shellcheck source=launch/lib.sh
source "$(dirname "$0")/lib.sh"

PROJECT="${PROJECT:-}" ZONE="${ZONE:-}" ACCELERATOR="${ACCELERATOR:-}" BUCKET="${BUCKET:-}"
CONFIG="${CONFIG:-}" RUNTIME="${RUNTIME:-tpu-ubuntu2204-base}" TPU_NAME="${TPU_NAME:-}"
WORKDIR="${WORKDIR:-}" RUN_NAME="${RUN_NAME:-}" STAGE_DATA="${STAGE_DATA:-}"
REPO="${REPO:-$(cd "$(dirname "$0")/.." && pwd)}" RESTARTS="${RESTARTS:-0}"
KEEP=0 SKIP_CREATE=0 DRY_RUN=0
EXTRA=()
while (($#)); do
  case "$1" in
    --project=*) PROJECT="${1#*=}" ;;
    --zone=*) ZONE="${1#*=}" ;;
    --accelerator=*) ACCELERATOR="${1#*=}" ;;
    --runtime=*) RUNTIME="${1#*=}" ;;
    --name=*) TPU_NAME="${1#*=}" ;;
    --bucket=*) BUCKET="${1#*=}" ;;
    --config=*) CONFIG="${1#*=}" ;;
    --workdir=*) WORKDIR="${1#*=}" ;;
    --run-name=*) RUN_NAME="${1#*=}" ;;
    --stage-data=*) STAGE_DATA="${1#*=}" ;;
    --repo=*) REPO="${1#*=}" ;;
    --restarts=*) RESTARTS="${1#*=}" ;;
    --keep) KEEP=1 ;;
    --skip-create) SKIP_CREATE=1 ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown argument '$1' (overrides for unimo_jax.main go after --); see --help" ;;
  esac
  shift
done

require PROJECT ZONE ACCELERATOR BUCKET CONFIG
[[ "$BUCKET" == gs://* ]] || die "--bucket: expected a gs:// URL, found '$BUCKET'"
[[ -z "$STAGE_DATA" || "$STAGE_DATA" == gs://* ]] \
  || die "--stage-data: expected a gs:// URL, found '$STAGE_DATA'"
require_config_spec "$CONFIG"
[[ "$RESTARTS" =~ ^[0-9]+$ ]] || die "--restarts: expected a number, found '$RESTARTS'"

if [[ -z "$RUN_NAME" ]]; then
  config_file="${CONFIG%%:*}"
  RUN_NAME="$(basename "$config_file" .py)-${CONFIG##*:}-$(date +%Y%m%d-%H%M%S)"
fi
TPU_NAME="${TPU_NAME:-unimo-${RUN_NAME//[^a-z0-9-]/-}}"
TPU_NAME="${TPU_NAME:0:60}"
WORKDIR="${WORKDIR:-${BUCKET%/}/unimo_jax/${RUN_NAME}}"
TARBALL="/tmp/unimo_jax-${RUN_NAME}.tar.gz"
LOG="unimo-${RUN_NAME}.log"

tpu=(gcloud compute tpus tpu-vm)
where=(--project="$PROJECT" --zone="$ZONE")

# the command every worker runs (quoted once for the remote shell)
main_cmd="cd ~/unimo_jax && python3 -m unimo_jax.main --config=$(printf '%q' "$CONFIG")"
main_cmd+=" --workdir=$(printf '%q' "$WORKDIR")"
for arg in "${EXTRA[@]+"${EXTRA[@]}"}"; do
  main_cmd+=" $(printf '%q' "$arg")"
done

install_cmd="mkdir -p ~/unimo_jax && tar -xzf ~/$(basename "$TARBALL") -C ~/unimo_jax"
install_cmd+=" && pip install -q -U 'jax[tpu]==0.10.2'"
install_cmd+=" -f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
install_cmd+=" && pip install -q -e ~/unimo_jax 'etils[epath-gcs]' google-cloud-storage"

cleanup() {
  if ((KEEP == 0)); then
    run "${tpu[@]}" delete "$TPU_NAME" "${where[@]}" --quiet
  else
    echo "keeping $TPU_NAME (delete: ${tpu[*]} delete $TPU_NAME --zone=$ZONE --quiet)" >&2
  fi
}

echo "run $RUN_NAME: $ACCELERATOR as $TPU_NAME, workdir $WORKDIR, log $LOG" >&2
if ((SKIP_CREATE == 0)); then
  run "${tpu[@]}" create "$TPU_NAME" "${where[@]}" --accelerator-type="$ACCELERATOR" \
    --version="$RUNTIME"
fi
if ((DRY_RUN == 0)); then trap cleanup EXIT; fi
run tar -czf "$TARBALL" -C "$REPO" --exclude=.git --exclude=.venv --exclude=workdirs .
run "${tpu[@]}" scp "$TARBALL" "$TPU_NAME":~/ "${where[@]}" --worker=all
run "${tpu[@]}" ssh "$TPU_NAME" "${where[@]}" --worker=all --command="$install_cmd"
if [[ -n "$STAGE_DATA" ]]; then
  run "${tpu[@]}" ssh "$TPU_NAME" "${where[@]}" --worker=all \
    --command="mkdir -p /tmp/data && gcloud storage cp -r '${STAGE_DATA%/}/*' /tmp/data/"
fi
# Logs of every worker stream here (prefixed by gcloud with the worker) and into $LOG.
every_worker() {
  run "${tpu[@]}" ssh "$TPU_NAME" "${where[@]}" --worker=all --command="$main_cmd" 2>&1 \
    | tee -a "$LOG"
}
if ((DRY_RUN)); then
  run "${tpu[@]}" ssh "$TPU_NAME" "${where[@]}" --worker=all --command="$main_cmd"
  cleanup
else
  status=0
  run_with_restarts every_worker || status=$?
  if ((status != 0)); then
    echo "error: the run on $TPU_NAME exited with code $status (log: $LOG)" >&2
    report_lost_hosts "$LOG" --
  fi
  exit "$status"
fi
