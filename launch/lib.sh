# shellcheck shell=bash
# Helpers shared by the launch scripts (sourced, not run).

# Prints the message and exits 2 (a usage error: nothing has been run).
die() {
  echo "error: $*" >&2
  exit 2
}

# Runs a command, or with DRY_RUN=1 prints it shell-quoted (ready to paste) instead.
run() {
  if ((DRY_RUN)); then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# Fails with the names of the required parameters (variable names) that are empty.
require() {
  local missing=() name
  for name in "$@"; do
    [[ -n "${!name}" ]] || missing+=("--$(echo "$name" | tr '[:upper:]_' '[:lower:]-') (or \$$name)")
  done
  ((${#missing[@]} == 0)) || die "missing required parameter(s): ${missing[*]}"
}

# Fails unless the config argument looks like FILE.py:PRESET.
require_config_spec() {
  [[ "$1" == *.py:* ]] || die "--config: expected FILE.py:PRESET, found '$1'"
}

# Runs "$@" (a command or a function) again after an exit other than 0 (done) and 2 (a usage,
# config or data error that no restart fixes), up to $RESTARTS more times; each run resumes from
# the workdir's newest valid checkpoint. Returns the last run's exit code.
run_with_restarts() {
  local attempt=0 rc
  while true; do
    rc=0
    "$@" || rc=$?
    if ((rc == 0 || rc == 2 || attempt >= RESTARTS)); then
      return "$rc"
    fi
    attempt=$((attempt + 1))
    echo "run exited with code $rc; restart $attempt of $RESTARTS (resumes from the workdir)" >&2
  done
}

# Prints which hosts the survivors reported lost ("lost process N of M" lines in the logs),
# naming each by its entry in the host list given after the log files and `--` (no list: TPU
# workers, whose process N is worker N).
report_lost_hosts() {
  local logs=() hosts=()
  while (($#)) && [[ "$1" != "--" ]]; do logs+=("$1"); shift; done
  shift || true
  hosts=("$@")
  grep -ho 'lost process [0-9, ]* of' "${logs[@]}" 2>/dev/null | tr -c '0-9\n' ' ' \
    | tr ' ' '\n' | grep . | sort -un | while read -r id; do
    echo "error: process $id (${hosts[$id]:-worker $id}) was lost; see ${logs[*]}" >&2
  done || true
}

