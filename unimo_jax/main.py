"""Command line: python -m unimo_jax.main --config=configs/<file>.py:<preset> --workdir=DIR
[--mode=train|eval|predict|check|compile] [--config.<field>=<value> ...].

Every config (configs/pretrain.py and each task's configs/<task>.py) runs through the one driver
(unimo_jax/train/driver.py):
  train    train, resuming from DIR/checkpoints; evaluate every eval_every steps and at the end
  eval     evaluate the latest checkpoint (or config.init_from when there is none)
  predict  write predictions (task configs; data.predict_dir, default the eval split)
  check    one sharded forward pass of the pretraining loss on a random batch
  compile  compile the config's programs for a TPU slice (--topology=v5e-16 [--num_slices=N]
           [--compile_effort=E] [--compile_layers=1,2,3]) on any machine and report per-chip
           memory, FLOPs, collectives and estimated MFU (unimo_jax/compile/aot.py)
"""

import ast
import os
import pathlib
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags



def shipped_configs_dir() -> pathlib.Path:
  """The configs/ folder: unimo_jax/configs in an installed wheel, <checkout>/configs in a source
  tree (an editable install)."""
  package = pathlib.Path(__file__).resolve().parent
  installed = package / "configs"
  return installed if installed.is_dir() else package.parent / "configs"


def resolved_config_argument(arg: str) -> str:
  """--config=configs/<file>.py:<preset> with the file taken from the shipped configs when no
  such file exists from the current directory; any other argument unchanged."""
  if not arg.startswith("--config=") or ":" not in arg:
    return arg
  path, _, preset = arg[len("--config="):].rpartition(":")
  parts = pathlib.PurePath(path).parts
  if pathlib.Path(path).exists() or len(parts) != 2 or parts[0] != "configs":
    return arg
  shipped = shipped_configs_dir() / parts[1]
  return f"--config={shipped}:{preset}" if shipped.exists() else arg


_DEFAULT_CONFIG = shipped_configs_dir() / "pretrain.py"
MODES = ("train", "eval", "predict", "check", "compile")
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/unimo_tiny", "Where outputs are written.")
_MODE = flags.DEFINE_enum("mode", "train", MODES, "What to run.")
_TOPOLOGY = flags.DEFINE_string("topology", "v5e-16", "--mode=compile: the TPU slice, as TPU "
                                "types are named (v5e-16, v4-32, v5p-8, v6e-64, ...).")
_NUM_SLICES = flags.DEFINE_integer("num_slices", 1, "--mode=compile: slices joined over DCN.")
_EFFORT = flags.DEFINE_float("compile_effort", 0.0, "--mode=compile: XLA's "
                             "exec_time_optimization_effort in [-1, 1]; 0 compiles what a run "
                             "compiles, -1 a less optimised program several times faster.")
_LAYERS = flags.DEFINE_list("compile_layers", ["1", "2"], "--mode=compile, scanned layers: the "
                            "unrolled layer counts whose estimates the per-layer line is fitted "
                            "on (three or more also report how far they lie off it).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # library INFO chatter (orbax, XLA) off the console
  logging.get_absl_handler().addFilter(_no_orbax_error_pages)
  from unimo_jax.compile.topology import give_libtpu_compiler_stack
  give_libtpu_compiler_stack()  # a TPU run's compiles need it as --mode=compile's do
  from unimo_jax.errors import RUN_ERRORS, CheckpointWriteError  # after flag parsing: keeps
  from unimo_jax.train import driver, peers                        # --help fast
  modes = {"train": driver.train_and_evaluate, "eval": driver.evaluate,
           "predict": driver.predict, "check": driver.check, "compile": _compile}
  config = flags.FLAGS.config
  if _MODE.value != "compile" and _supervised_launch(config):
    from unimo_jax.paths import as_path
    from unimo_jax.train import supervise
    sys.exit(supervise.run_as_child(["-m", "unimo_jax.main", *sys.argv[1:]],
                                    _process_label(config),
                                    as_path(_WORKDIR.value) / "checkpoints"))
  try:
    if _MODE.value != "compile":
      peers.initialize_distributed(config)
    modes[_MODE.value](config, _WORKDIR.value)
    peers.leave_together()  # multi-process runs: process 0, the coordinator, leaves last
  except RUN_ERRORS as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    if isinstance(e, CheckpointWriteError):
      # orbax's writer threads still hold the failed save; a normal interpreter exit would print
      # their tracebacks after this line
      os._exit(2)
    sys.exit(2)


def _no_orbax_error_pages(record) -> bool:
  """Leaves out orbax's own error records: each failed save or restore is logged by every
  thread it passed through, with a traceback (pages for one full disk), and the run reports it
  itself in one line (CheckpointWriteError, CorruptCheckpoint)."""
  return not (record.levelno >= logging.ERROR and "/orbax/" in record.pathname)


def _supervised_launch(config) -> bool:
  """A process of a multi-process run with the lost-process watch on, not yet under its parent
  (train/supervise.py: the loss of process 0 aborts the others, which only a parent can report)."""
  from unimo_jax.train import peers, supervise
  return (peers.is_multi_process_launch(config) and not supervise.is_child()
          and float(config.distributed.get("peer_timeout_s", 0)) > 0)


def _process_label(config) -> str:
  d = config.distributed
  return str(d.process_id) if d.coordinator_address else os.environ.get("TPU_WORKER_ID", "?")


def _compile(config, workdir):
  from unimo_jax.compile.aot import compile_for_tpu
  compile_for_tpu(config, workdir, _TOPOLOGY.value, _NUM_SLICES.value, _EFFORT.value,
                  _LAYERS.value)


def _unknown_field(error):
  overrides = " ".join(a for a in sys.argv if a.startswith("--config."))
  reason = str(error.args[0] if error.args else error)
  if reason[:1] in "'\"":  # an AttributeError carrying a KeyError's repr
    try:
      reason = ast.literal_eval(reason)
    except (ValueError, SyntaxError):
      pass
  reason = " ".join(str(reason).split())  # one line
  print(f"error: unknown config field in {overrides}: {reason}; see the config file for the "
        "fields it defines", file=sys.stderr)
  sys.exit(2)


def _config_error(error):
  """A config file that cannot be loaded (unknown preset, bad value): its own last line."""
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  reasons = [l for l in lines if not l.startswith(("Traceback", "File ", "^", "Pass --help"))]
  reason = (reasons or lines or [type(error).__name__])[-1]
  reason = re.sub(r"^[A-Za-z]*(Error|Exception): ", "", reason)
  print(f"error: {reason}", file=sys.stderr)
  sys.exit(2)


def _compile_mode(argv) -> bool:
  return "--mode=compile" in argv or any(a == "--mode" and b == "compile"
                                          for a, b in zip(argv, argv[1:]))


def run():
  sys.argv = [resolved_config_argument(a) for a in sys.argv]
  if not _compile_mode(sys.argv):
    # before anything imports jax (the config file does): no libtpu start-up errors on a CPU
    # machine that has the [tpu] extra installed
    from unimo_jax.compile.topology import skip_absent_tpu
    skip_absent_tpu()
  try:
    # config_flags applies --config.<field> overrides of the default config while the flag is
    # defined, and those of a --config=<file> while the flags are parsed: an unknown field
    # surfaces in one of the two places, before anything runs.
    config_flags.DEFINE_config_file(
        "config", f"{_DEFAULT_CONFIG}:tiny",
        "Config file and preset, e.g. configs/pretrain.py:base.", lock_config=True)
  except (AttributeError, KeyError) as e:
    _unknown_field(e)
  except ValueError as e:
    _config_error(e)
  try:  # parsed and loaded here once, so that a config that cannot load is one line
    remaining = flags.FLAGS(sys.argv)
    flags.FLAGS.config.get("preset")  # a config file is loaded when first read
  except (flags.Error, OSError, ValueError, TypeError) as e:
    _config_error(e)
  except (AttributeError, KeyError) as e:
    _unknown_field(e)
  try:
    app.run(main, flags_parser=lambda _: remaining)  # parsed above: not again
  except (AttributeError, KeyError) as e:
    if flags.FLAGS.is_parsed():
      raise  # a failure of the run itself, not of the overrides
    _unknown_field(e)


if __name__ == "__main__":
  run()
