"""Shared pieces of the training tests."""

import contextlib
import os
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np

from unimo_jax.parallel import batch_sharding, rules_from_config
from unimo_jax.train.config_parts import config_from_path
from unimo_jax.train.metric_log import read_metric_rows
from unimo_jax.train.optimizer import make_optimizer
from unimo_jax.train.state import create_state, state_shardings
from unimo_jax.train.step import jit_train_step

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main_command(workdir, *overrides):
  return [sys.executable, "-m", "unimo_jax.main", f"--workdir={workdir}", *overrides]


def small_run_pairs() -> int:
  return 400


def small_run_overrides(data_dir, steps):
  """A fast tiny run on a small synthetic set: data_dir holds it (the session's `run_scenes`) or
  the run generates it there."""
  return [f"--config.steps={steps}", "--config.batch.text=8", "--config.batch.image=8",
          "--config.batch.pair=8", f"--config.data.synthetic_dir={data_dir}",
          f"--config.data.synthetic_pairs={small_run_pairs()}", "--config.log_every=1",
          "--config.eval_every=1000",
          "--config.eval_batch=50", "--config.optimizer.warmup_steps=2"]


def run_main(args, env_devices=1, check=True, **kwargs):
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(env_devices))
  result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                          **kwargs)
  if check and result.returncode != 0:
    raise AssertionError(f"{args} exited {result.returncode}:\n{result.stderr[-3000:]}")
  return result


def config_from_file(name, preset):
  """configs/<name>.py:<preset> as the command line would load it."""
  return config_from_path(ROOT / "configs" / f"{name}.py", preset)


def pretrain_config(preset="tiny", batch=8):
  """configs/pretrain.py:<preset> with `batch` examples per stream (small, for tests)."""
  config = config_from_file("pretrain", preset)
  config.batch.text = config.batch.image = config.batch.pair = batch
  return config


def set_fields(config, fields):
  """config with each dotted `fields` key ('data.eval_limit') set to its value; returns it."""
  for key, value in fields.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def training_losses(workdir):
  """{step: training loss} of the rows a run has written so far (it may still be writing)."""
  return {r["step"]: r["total_loss"] for r in read_metric_rows(workdir) if r["split"] == "train"}


@contextlib.contextmanager
def sharded_training(config, mesh, batch):
  """Inside the mesh and the config's logical-axis rules (where the step is traced): (a fresh
  sharded state, the jitted train step, the batch placed on the mesh, the state's shardings)."""
  rules = rules_from_config(config.logical_axis_rules)
  tx = make_optimizer(config)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    _, shardings = state_shardings(config, tx, mesh, rules)
    state = create_state(config, tx, shardings)
    batch_shardings = jax.tree.map(lambda x: batch_sharding(mesh, np.ndim(x)), batch)
    step = jit_train_step(config, tx, mesh, shardings, batch_shardings)
    yield state, step, jax.tree.map(jax.device_put, batch, batch_shardings), shardings
