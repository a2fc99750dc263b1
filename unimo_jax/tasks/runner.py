"""Fine-tuning, evaluation and prediction for every task: `run(config, workdir, mode)`.

  train    fine-tune from config.init_from (a params checkpoint, a training step directory or a
           pretraining workdir), resuming from <workdir>/checkpoints; evaluates at the end
  eval     metrics and predictions on the eval split with the latest checkpoint (or, when the
           workdir has none, config.init_from: zero-shot)
  predict  predictions only (config.data.predict_dir, default the eval split)

Outputs in the workdir: config.json, metrics.jsonl + tensorboard/, checkpoints/,
eval_metrics.json, predictions.jsonl.
"""

import json
import time

import flax.linen as nn
import jax
import numpy as np

from unimo_jax.data.pipeline import to_global_arrays
from unimo_jax.data.tokenizers import load_tokenizer
from unimo_jax.model.params import init_boxed_params
from unimo_jax.parallel import batch_sharding, make_mesh, rules_from_config
from unimo_jax.paths import as_path
from unimo_jax.tasks import registry
from unimo_jax.tasks.base import process_slice
from unimo_jax.tasks.synthetic import prepare_synthetic_task_data
from unimo_jax.train.checkpoint import Checkpointer, read_params
from unimo_jax.parallel import resolve_mesh_shape
from unimo_jax.train.loop import ConfigError, start_workdir
from unimo_jax.train.metrics import MetricWriter, Progress
from unimo_jax.train.optimizer import make_optimizer
from unimo_jax.train.state import create_state, state_shardings
from unimo_jax.train.step import jit_train_step

MODES = ("train", "eval", "predict")


def load_pretrained(path, abstract_params, shardings):
  """Backbone params from a params checkpoint, a training step directory (<step>/state) or a
  workdir (its latest step), checked against the model and placed as `shardings`."""
  try:
    params = read_params(path)
  except FileNotFoundError as e:
    raise ConfigError(f"init_from {e}") from None
  expected = jax.tree.structure(abstract_params)
  found = jax.tree.structure(params)
  if expected != found:
    raise ConfigError(f"init_from {path}: the parameter tree does not match config.model "
                      f"(expected {expected.num_leaves} arrays, found {found.num_leaves}); check "
                      "the preset, scan_layers and image_input")
  for (key, a), b in zip(jax.tree_util.tree_leaves_with_path(abstract_params),
                         jax.tree.leaves(params)):
    if a.shape != np.shape(b):
      raise ConfigError(f"init_from {path}: {jax.tree_util.keystr(key)} expected shape "
                        f"{a.shape}, found {np.shape(b)}")
  return jax.device_put(params, shardings)


def check_task_config(config, num_devices: int) -> dict:
  """Mesh sizes; a ConfigError for a mesh that does not fit or a batch that does not divide."""
  try:
    sizes = resolve_mesh_shape(config.mesh, num_devices)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  devices = sizes["data"] * sizes["fsdp"]
  per_step = config.batch_size // max(int(config.optimizer.accumulation_steps), 1)
  if config.batch_size <= 0 or config.batch_size % devices or per_step % devices:
    raise ConfigError(f"batch_size: {config.batch_size} examples (accumulation_steps "
                      f"{config.optimizer.accumulation_steps}) cannot be split evenly over the "
                      f"{devices} devices of the batch axes")
  if config.steps <= 0:
    raise ConfigError(f"steps: expected a positive number, found {config.steps}")
  return sizes


def _boxed_params_fn(task):
  def fn(config, key):
    return {"backbone": init_boxed_params(config.model, key),
            "head": task.init_head(jax.random.fold_in(key, 7))}
  return fn


def run(config, workdir, mode: str = "train") -> dict:
  """Runs `mode` for config.task; returns the eval metrics (empty for predict)."""
  if mode not in MODES:
    raise ConfigError(f"mode: expected one of {MODES}, found {mode!r}")
  workdir = as_path(workdir)
  sizes = check_task_config(config, jax.device_count())
  config = config.copy_and_resolve_references()
  prepare_synthetic_task_data(config, workdir)
  tokenizer = load_tokenizer(config.data.tokenizer)
  if tokenizer.vocab_size > config.model.vocab_size:
    raise ConfigError(f"tokenizer {config.data.tokenizer}: {tokenizer.vocab_size} ids, more than "
                      f"model.vocab_size {config.model.vocab_size}")
  mesh = make_mesh(sizes)
  rules = rules_from_config(config.logical_axis_rules)
  start_workdir(workdir, config)
  task = registry.make_task(config, tokenizer, workdir, mesh)
  tx = make_optimizer(config)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    init_fn = _boxed_params_fn(task)
    abstract, shardings = state_shardings(config, tx, mesh, rules, init_fn)
    checkpoints = Checkpointer(workdir / "checkpoints", every=config.checkpoint_every,
                               keep=config.keep_checkpoints, use_async=config.async_checkpoints)
    try:
      state = _initial_state(config, tx, abstract, shardings, checkpoints, init_fn, mode)
      if mode == "train":
        state = _train(config, task, tx, mesh, state, shardings, checkpoints, workdir)
      if mode == "predict":
        path = task.write_predictions(task.predict(state["params"]))
        print(f"wrote {path}", flush=True)
        return {}
      return _evaluate(task, state["params"], workdir, int(state["step"]))
    finally:
      checkpoints.close()


def _initial_state(config, tx, abstract, shardings, checkpoints, init_fn, mode):
  if checkpoints.latest_step() is not None:
    state, _ = checkpoints.restore(abstract, shardings)
    print(f"restored step {int(state['step'])} from {checkpoints.directory}", flush=True)
    return state
  state = create_state(config, tx, shardings, init_fn)
  if config.init_from:
    backbone = load_pretrained(config.init_from, abstract["params"]["backbone"],
                               shardings["params"]["backbone"])
    state = dict(state, params=dict(state["params"], backbone=backbone))
    print(f"initialised the backbone from {config.init_from}; the head starts fresh", flush=True)
  elif mode != "train":
    print("warning: no checkpoint and no init_from: evaluating a randomly initialised model",
          flush=True)
  return state


def _train(config, task, tx, mesh, state, shardings, checkpoints, workdir):
  source = task.source("train")
  batches = task.make_batches(source)
  if task.skipped:
    print(f"skipped training records: {task.skipped}", flush=True)
  step = int(state["step"])
  if step >= config.steps:
    return state
  first = task.train_batch(source, process_slice(batches(step)), step)
  batch_shardings = jax.tree.map(lambda x: batch_sharding(mesh, np.ndim(x)), first)
  step_fn = jit_train_step(config, tx, mesh, shardings, batch_shardings, loss_fn=task.loss)
  writer = MetricWriter(workdir)
  progress = Progress(config.steps, step)
  batch = first
  try:
    while step < config.steps:
      start = time.perf_counter()
      if batch is None:
        batch = task.train_batch(source, process_slice(batches(step)), step)
      state, metrics = step_fn(state, to_global_arrays(batch, mesh))
      batch = None
      step += 1
      if step % config.log_every == 0 or step == config.steps:
        scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if not np.isfinite(scalars["total_loss"]):
          raise FloatingPointError(f"step {step}: non-finite loss {scalars['total_loss']}")
        scalars["examples_per_second"] = config.batch_size / (time.perf_counter() - start)
        writer.write(step, scalars)
        progress.report(step, scalars)
      if step % config.checkpoint_every == 0 or step == config.steps:
        checkpoints.save(step, state, {"step": step}, force=step == config.steps)
  finally:
    writer.close()
  checkpoints.wait()
  return state


def _evaluate(task, params, workdir, step):
  start = time.perf_counter()
  metrics, predictions = task.evaluate(params)
  path = task.write_predictions(predictions)
  metrics = dict(metrics)
  if task.skipped:
    metrics["skipped"] = dict(task.skipped)
  if jax.process_index() == 0:
    (workdir / "eval_metrics.json").write_text(json.dumps(metrics, indent=2))
    writer = MetricWriter(workdir)
    writer.write(step, {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                 prefix="eval")
    writer.close()
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    print(f"eval @ {step} ({time.perf_counter() - start:.0f} s): {shown}", flush=True)
    print(f"wrote {workdir / 'eval_metrics.json'} and {path}", flush=True)
  return metrics
