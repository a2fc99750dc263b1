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
