"""Command line: python -m unimo_jax.main --config=configs/pretrain.py:tiny --workdir=DIR."""

import pathlib

from absl import app, flags
from ml_collections import config_flags

_DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parent.parent / "configs" / "pretrain.py"
_CONFIG = config_flags.DEFINE_config_file(
    "config", f"{_DEFAULT_CONFIG}:tiny", "Config file and preset, e.g. configs/pretrain.py:base.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/unimo_tiny", "Where outputs are written.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from unimo_jax import forward_check  # after flag parsing: keeps --help fast
  forward_check.run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
