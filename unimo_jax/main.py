"""Command line: python -m unimo_jax.main --config=configs/pretrain.py:tiny --workdir=DIR.

Pretraining configs (configs/pretrain.py) take --mode=train (default; resumes from
DIR/checkpoints) or check (one sharded forward pass of every objective on a random batch).
Task configs (configs/{caption,retrieval,vqa,snli_ve,glue,seq2seq}.py) take --mode=train, eval or
predict (see unimo_jax/tasks/runner.py).
"""

import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parent.parent / "configs" / "pretrain.py"
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/unimo_tiny", "Where outputs are written.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "check", "eval", "predict"], "What to run.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # library INFO chatter (orbax, XLA) off the console
  config = flags.FLAGS.config
  from unimo_jax.data.records import DataError  # after flag parsing: keeps --help fast
  from unimo_jax.train import loop
  try:
    loop.initialize_distributed(config)
    if "task" in config:
      from unimo_jax.tasks import runner
      if _MODE.value == "check":
        raise loop.ConfigError("--mode=check is for pretraining configs; tasks take train, eval "
                               "or predict")
      runner.run(config, _WORKDIR.value, _MODE.value)
    elif _MODE.value in ("eval", "predict"):
      raise loop.ConfigError(f"--mode={_MODE.value} needs a task config (configs/<task>.py); "
                             "pretraining evaluates during --mode=train")
    elif _MODE.value == "check":
      from unimo_jax import forward_check
      forward_check.run(config, _WORKDIR.value)
    else:
      loop.run(config, _WORKDIR.value)
  except (loop.ConfigError, loop.NonFiniteLoss, DataError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def _unknown_field(error):
  overrides = [a for a in sys.argv if a.startswith("--config.")]
  print(f"error: unknown config field {error} in {overrides}; see the config file for the fields "
        "it defines", file=sys.stderr)
  sys.exit(2)


def run():
  try:
    # config_flags applies --config.<field> overrides of the default config while the flag is
    # defined, and those of a --config=<file> while the flags are parsed: an unknown field
    # surfaces in one of the two places, before anything runs.
    config_flags.DEFINE_config_file(
        "config", f"{_DEFAULT_CONFIG}:tiny",
        "Config file and preset, e.g. configs/pretrain.py:base.", lock_config=True)
  except (AttributeError, KeyError) as e:
    _unknown_field(e)
  try:
    app.run(main)
  except (AttributeError, KeyError) as e:
    if flags.FLAGS.is_parsed():
      raise  # a failure of the run itself, not of the overrides
    _unknown_field(e)


if __name__ == "__main__":
  run()
