"""The pretraining loop: config -> mesh -> data -> sharded state -> jitted steps -> checkpoints,
metrics and evaluation. `run(config, workdir)` is importable from a notebook."""

import json
import math
import os
import pathlib
import shutil
import time

import flax.linen as nn
import jax
import numpy as np

from unimo_jax.data.pipeline import make_pretraining_iterator, to_global_arrays
from unimo_jax.paths import as_path, local_dir
from unimo_jax.data.records import read_metadata
from unimo_jax.data.tokenizers import load_tokenizer
from unimo_jax.forward_check import parameter_table
from unimo_jax.model.params import abstract_params
from unimo_jax.parallel import batch_sharding, make_mesh, resolve_mesh_shape, rules_from_config
from unimo_jax.train.checkpoint import Checkpointer, load_params
from unimo_jax.train.evaluate import Evaluator
from unimo_jax.train.metrics import MetricWriter, Progress
from unimo_jax.train.optimizer import make_optimizer
from unimo_jax.train.state import create_state, state_shardings, state_with_params
from unimo_jax.train.step import jit_train_step

STREAMS = ("text", "image", "pair")


class ConfigError(ValueError):
  """A configuration that cannot run; raised before anything is compiled or written."""


class NonFiniteLoss(FloatingPointError):
  pass


# ---- set-up ----------------------------------------------------------------------------------

def initialize_distributed(config) -> None:
  """jax.distributed.initialize for multi-process runs (explicit flags, or auto-detection on TPU
  pods / when JAX_COORDINATOR_ADDRESS is set). A no-op for one process."""
  d = config.distributed
  if d.coordinator_address:
    if d.num_processes <= 0 or d.process_id < 0:
      raise ConfigError("distributed: coordinator_address needs num_processes > 0 and "
                        f"process_id >= 0, found {d.num_processes} and {d.process_id}")
    jax.distributed.initialize(d.coordinator_address, int(d.num_processes), int(d.process_id))
  elif os.environ.get("JAX_COORDINATOR_ADDRESS") or "," in os.environ.get(
      "TPU_WORKER_HOSTNAMES", ""):
    jax.distributed.initialize()


def check_config(config, num_devices: int) -> dict:
  """Mesh sizes; raises ConfigError for a mesh that does not fit the devices or batches that do
  not divide over the batch axes."""
  try:
    sizes = resolve_mesh_shape(config.mesh, num_devices)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  batch_devices = sizes["data"] * sizes["fsdp"]
  for stream in STREAMS:
    size = int(config.batch[stream])
    if size < 0 or size % batch_devices:
      raise ConfigError(f"batch.{stream}: {size} examples cannot be split evenly over the "
                        f"{batch_devices} devices of the batch axes (data={sizes['data']} x "
                        f"fsdp={sizes['fsdp']})")
    if size and config.optimizer.accumulation_steps > 1 and (
        size // config.optimizer.accumulation_steps) % batch_devices:
      raise ConfigError(f"batch.{stream}: {size} / accumulation_steps "
                        f"{config.optimizer.accumulation_steps} is not divisible by {batch_devices}")
  if config.steps <= 0:
    raise ConfigError(f"steps: expected a positive number, found {config.steps}")
  return sizes


def ensure_synthetic_scenes(root, *, pairs: int, feature_dim: int, seed: int) -> pathlib.Path:
  """Generates the synthetic scenes into `root` unless they are there already (safe when several
  processes race: each writes a scratch copy and the first rename wins)."""
  root = pathlib.Path(root)
  if not (root / "eval" / "pair" / "metadata.json").exists():
    from unimo_jax.data.synthetic_dataset import write_synthetic
    scratch = root.with_name(f"{root.name}.tmp{os.getpid()}")
    print(f"generating the synthetic scenes into {root} ...", flush=True)
    write_synthetic(scratch, pairs=pairs, eval_pairs=min(1000, max(pairs // 10, 50)),
                    images=max(pairs // 5, 100), texts=max(pairs * 2 // 5, 100),
                    feature_dim=feature_dim, seed=seed)
    if not (root / "eval" / "pair" / "metadata.json").exists():
      shutil.rmtree(root, ignore_errors=True)
      scratch.rename(root)
    else:  # another process finished first
      shutil.rmtree(scratch, ignore_errors=True)
  return root


def prepare_data(config, workdir):
  """Fills in the dataset directories; generates the synthetic scenes when none are given."""
  d = config.data
  if d.text_dir or d.image_dir or d.pair_dir:
    return
  root = ensure_synthetic_scenes(d.synthetic_dir or local_dir(workdir, "synthetic_scenes"),
                                 pairs=int(d.synthetic_pairs),
                                 feature_dim=config.model.region_feature_dim, seed=config.seed)
  d.text_dir, d.image_dir = str(root / "train" / "text"), str(root / "train" / "image")
  d.pair_dir = str(root / "train" / "pair")
  d.eval_dir = d.eval_dir or str(root / "eval" / "pair")
  d.tokenizer = d.tokenizer or str(root / "tokenizer.model")


def start_workdir(workdir, config) -> bool:
  """Creates the workdir and saves the resolved config there (process 0); True on process 0."""
  primary = jax.process_index() == 0
  if primary:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  return primary


def check_data_against_model(config, tokenizer) -> None:
  m = config.model
  if tokenizer.vocab_size > m.vocab_size:
    raise ConfigError(f"model.vocab_size {m.vocab_size} is smaller than the tokenizer's "
                      f"{tokenizer.vocab_size} ({config.data.tokenizer})")
  for name in ("image_dir", "pair_dir"):
    path = config.data[name]
    if not path:
      continue
    meta = read_metadata(path)
    for key, field in (("region_feature_dim", "region_feature_dim"),
                       ("num_classes", "num_region_classes")):
      if meta.get(key) and meta[key] != m[field]:
        raise ConfigError(f"data.{name} {path} has {key}={meta[key]}, the model expects "
                          f"model.{field}={m[field]}")


def measured_peak_flops(size=1024, repeats=5) -> float:
  """FLOP/s of a float32 matmul on one device: the MFU denominator when none is configured."""
  x = jax.numpy.ones((size, size), jax.numpy.float32)
  f = jax.jit(lambda a: a @ a)
  f(x).block_until_ready()
  start = time.perf_counter()
  for _ in range(repeats):
    f(x).block_until_ready()
  return 2 * size ** 3 * repeats / (time.perf_counter() - start)


def batch_tokens(batch) -> int:
  """Real text tokens plus real regions in a host batch (for tokens/s)."""
  total = 0
  def visit(node):
    nonlocal total
    if "input_ids" in node:
      total += int((np.asarray(node["input_ids"]) > 1).sum())
    if "region_mask" in node:
      total += int(np.asarray(node["region_mask"]).sum())
    for value in node.values():
      if isinstance(value, dict):
        visit(value)
  visit(batch)
  return total


def _finite_or_raise(step, metrics):
  loss = float(metrics["total_loss"])
  if not math.isfinite(loss):
    bad = sorted(k for k, v in metrics.items() if not math.isfinite(float(v)))
    raise NonFiniteLoss(f"step {step}: non-finite loss {loss} (non-finite metrics: {bad}); "
                        "stopping; the last checkpoint is the last good state")


# ---- the loop --------------------------------------------------------------------------------

def run(config, workdir) -> dict:
  """Pretrains per `config`, resuming from <workdir>/checkpoints; returns the last eval metrics."""
  workdir = as_path(workdir)
  sizes = check_config(config, jax.device_count())
  config = config.copy_and_resolve_references()
  prepare_data(config, workdir)
  tokenizer = load_tokenizer(config.data.tokenizer)
  check_data_against_model(config, tokenizer)
  mesh = make_mesh(sizes)
  rules = rules_from_config(config.logical_axis_rules)
  primary = start_workdir(workdir, config)
  print(f"mesh {sizes} over {jax.device_count()} {jax.devices()[0].platform} device(s), "
        f"{jax.process_count()} process(es)", flush=True)

  tx = make_optimizer(config)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abstract, shardings = state_shardings(config, tx, mesh, rules)
    if primary:
      boxed = abstract_params(config.model)
      print(parameter_table(boxed, shardings["params"]), flush=True)
    data = make_pretraining_iterator(config.data, {s: config.batch[s] for s in STREAMS},
                                     tokenizer.special_ids, tokenizer.vocab_size)
    checkpoints = Checkpointer(workdir / "checkpoints", every=config.checkpoint_every,
                               keep=config.keep_checkpoints, use_async=config.async_checkpoints)
    if checkpoints.latest_step() is not None:
      state, data_state = checkpoints.restore(abstract, shardings)
      data.set_state(data_state)
      print(f"resumed from step {int(state['step'])}", flush=True)
    else:
      state = create_state(config, tx, shardings)
      if config.init_from:
        params = load_params(config.init_from, abstract["params"], shardings["params"])
        state = state_with_params(state, params, shardings)
        print(f"initialised params from {config.init_from}", flush=True)

    first = next(data)
    batch_shardings = jax.tree.map(lambda x: batch_sharding(mesh, np.ndim(x)), first)
    step_fn = jit_train_step(config, tx, mesh, shardings, batch_shardings)
    compiled = step_fn.lower(state, to_global_arrays(first, mesh)).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    step_flops = float((cost or {}).get("flops", 0.0)) * jax.device_count()
    peak = float(config.peak_flops) or measured_peak_flops()
    examples_per_step = sum(int(config.batch[s]) for s in STREAMS)
    evaluator = Evaluator(config, config.data.eval_dir, tokenizer) if config.data.eval_dir else None
    writer = MetricWriter(workdir)
    step = int(state["step"])
    progress = Progress(config.steps, step)
    pending = None  # (step, metrics, seconds, wait, tokens) read one step late
    last_eval = {}
    batch = first

    def flush(entry):
      s, metrics, seconds, wait, tokens = entry
      scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
      _finite_or_raise(s, scalars)
      if s % config.log_every == 0 or s == config.steps:
        scalars.update(examples_per_second=examples_per_step / seconds,
                       tokens_per_second=tokens / seconds,
                       mfu=step_flops / seconds / (peak * jax.device_count()),
                       input_wait_fraction=wait / seconds, step_seconds=seconds)
        writer.write(s, scalars)
        progress.report(s, scalars)

    try:
      while step < config.steps:
        start = time.perf_counter()
        if batch is None:
          batch = next(data)
        wait = time.perf_counter() - start
        tokens = batch_tokens(batch)
        state, metrics = compiled(state, to_global_arrays(batch, mesh))
        batch = None
        if pending is not None:
          flush(pending)
        step += 1
        if step % config.checkpoint_every == 0 or step == config.steps:
          jax.block_until_ready(metrics)
          flush((step, metrics, time.perf_counter() - start, wait, tokens))
          pending = None
          checkpoints.save(step, state, data.get_state(), force=step == config.steps)
        else:
          pending = (step, metrics, time.perf_counter() - start, wait, tokens)
        if evaluator and (step % config.eval_every == 0 or step == config.steps):
          last_eval = evaluator({"params": state["params"]})
          writer.write(step, last_eval, prefix="eval")
          if primary:
            print(f"eval @ {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in last_eval.items()),
                  flush=True)
      if pending is not None:
        flush(pending)
    finally:
      checkpoints.close()
      writer.close()
  if primary and last_eval:
    (workdir / "eval_metrics.json").write_text(json.dumps(last_eval, indent=2))
  return last_eval
