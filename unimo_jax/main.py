"""Command line: python -m unimo_jax.main --config=configs/pretrain.py:tiny --workdir=DIR.

Modes: train (default; pretrains, resuming from DIR/checkpoints) and check (one sharded forward
pass of every objective on a random batch).
"""

import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parent.parent / "configs" / "pretrain.py"
_CONFIG = config_flags.DEFINE_config_file(
    "config", f"{_DEFAULT_CONFIG}:tiny", "Config file and preset, e.g. configs/pretrain.py:base.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/unimo_tiny", "Where outputs are written.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "check"], "What to run.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # library INFO chatter (orbax, XLA) off the console
  config = _CONFIG.value
  from unimo_jax.train import loop  # after flag parsing: keeps --help fast
  try:
    loop.initialize_distributed(config)
    if _MODE.value == "check":
      from unimo_jax import forward_check
      forward_check.run(config, _WORKDIR.value)
    else:
      loop.run(config, _WORKDIR.value)
  except (loop.ConfigError, loop.NonFiniteLoss) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def run():
  try:
    app.run(main)
  except AttributeError as e:  # config_flags' way of saying an override names no field
    if "config" in " ".join(sys.argv):
      print(f"error: unknown config field {e} in {[a for a in sys.argv if 'config.' in a]}; "
            "see the config file for the fields it defines", file=sys.stderr)
      sys.exit(2)
    raise


if __name__ == "__main__":
  run()
