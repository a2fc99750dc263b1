"""Shared pieces of the training tests."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main_command(workdir, *overrides):
  return [sys.executable, "-m", "unimo_jax.main", f"--workdir={workdir}", *overrides]


def small_run_overrides(data_dir, steps):
  """A fast tiny run on a small synthetic set (generated once into data_dir)."""
  return [f"--config.steps={steps}", "--config.batch.text=8", "--config.batch.image=8",
          "--config.batch.pair=8", f"--config.data.synthetic_dir={data_dir}",
          "--config.data.synthetic_pairs=400", "--config.log_every=1", "--config.eval_every=1000",
          "--config.eval_batch=50", "--config.optimizer.warmup_steps=2"]


def run_main(args, env_devices=1, check=True, **kwargs):
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(env_devices))
  result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                          **kwargs)
  if check and result.returncode != 0:
    raise AssertionError(f"{args} exited {result.returncode}:\n{result.stderr[-3000:]}")
  return result
