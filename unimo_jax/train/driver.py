"""The one driver: pretraining and every fine-tuning task are trained, evaluated and predicted
through the functions below, read top-down. What differs between runs comes from the config's
experiment (train/experiment.py: train/pretraining_experiment.py or tasks/<task>.py).

  train_and_evaluate(config, workdir)  trains, resuming from <workdir>/checkpoints, and evaluates
                                       every eval_every steps (0: never) and at the end
  evaluate(config, workdir)            metrics and predictions of the latest checkpoint, or of
                                       init_from when the workdir has none (zero-shot)
  predict(config, workdir)             predictions of the latest checkpoint (data.predict_dir)
  check(config, workdir)               one sharded forward pass of the pretraining loss on a
                                       random batch (no data read)

Outputs in the workdir: config.json, data_paths.json, checkpoints/, metrics.jsonl, tensorboard/,
eval_metrics.json and (tasks) predictions.jsonl.
"""

import dataclasses
import json
import time

import flax.linen as nn
import jax
import numpy as np

from unimo_jax.data.formats.tokenizers import ShapeOnlyTokenizer
from unimo_jax.data.pipeline.streams import to_global_arrays
from unimo_jax.errors import RUN_ERRORS, ConfigError
from unimo_jax.parallel import (batch_sharding, check_sufficiently_sharded, make_mesh,
                                parameter_table, rules_from_config)
from unimo_jax.paths import as_path
from unimo_jax.train.checkpoint import Checkpointer, restore_params, stored_param_keys
from unimo_jax.train.checks import check_config, check_init_from_model, check_workdir_writable
from unimo_jax.train.config_parts import resolve_epochs
from unimo_jax.train.data_parallel import check_gradient_sum
from unimo_jax.train.experiment import experiment_class
from unimo_jax.train.metric_log import (DelayedMetrics, MetricWriter, Progress, batch_tokens,
                                        measured_peak_flops)
from unimo_jax.train.optimizer import make_optimizer
from unimo_jax.train.peers import watching_peers
from unimo_jax.train.preemption import PreemptionNotice
from unimo_jax.train.run_identity import check_resume_identity, run_identity, write_identity
from unimo_jax.train.state import create_state, state_shardings, state_with_params
from unimo_jax.train.step import jit_train_step
from unimo_jax.train.workdir import start_workdir, write_eval_metrics, write_predictions
from unimo_jax.train.workdir_lock import holding_workdir


@dataclasses.dataclass
class Run:
  """Everything a mode needs, set up once: the resolved config, its experiment, the mesh and
  rules, the optimizer and the abstract train state with its shardings."""
  config: object
  workdir: object
  experiment: object
  mesh: object
  rules: tuple
  tx: object
  abstract: dict
  shardings: dict

  def context(self):
    """The mesh and the logical-axis rules, around everything that traces the model."""
    import contextlib
    stack = contextlib.ExitStack()
    stack.enter_context(jax.set_mesh(self.mesh))
    stack.enter_context(nn.logical_axis_rules(self.rules))
    return stack


def start(config, workdir, mode: str, *, devices=None, read_data: bool = True,
          verbose: bool = True) -> Run:
  """Checks the config against the mode and the devices, builds the experiment and the mesh,
  resolves (or generates) the data, and derives the sharded state's layout; nothing is allocated
  on a device and nothing is written into the workdir (write_workdir does that, once the mode
  knows it can run). read_data=False reads no data: the experiment gets a shape-only tokenizer
  and no data paths (check and compile modes). `devices` may be abstract (compile-only) TPU
  devices."""
  # ---- config checks, before anything is written -------------------------------------------------
  workdir = as_path(workdir)
  check_workdir_writable(workdir)
  devices = list(jax.devices() if devices is None else devices)
  kind = experiment_class(config)
  kind.check_mode(mode)
  sizes = check_config(config, len(devices), kind.batch_sizes(config))
  try:
    check_gradient_sum(config.get("gradient_sum", "partitioner"), sizes, kind)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  config = config.copy_and_resolve_references()

  # ---- mesh, experiment, and the sharded state's layout (checked before any data is read) -------
  mesh = make_mesh(sizes, devices)
  rules = rules_from_config(config.logical_axis_rules)
  if read_data:
    experiment = kind(config, workdir, mesh)
  else:
    experiment = kind(config, workdir, mesh, data_paths={},
                      tokenizer=ShapeOnlyTokenizer(config.model.vocab_size))
  if read_data and mode == "train" and config.get("epochs"):  # the schedule needs the length
    _resolve_epochs(config, experiment, verbose)
  # (outside the mesh context: optax builds the optimizer state's layout eagerly, on the host)
  tx = make_optimizer(config)
  abstract, shardings = state_shardings(config, tx, mesh, rules, experiment.boxed_params)
  try:
    trained = ("params", "opt_state")
    check_sufficiently_sharded({k: abstract[k] for k in trained},
                               {k: shardings[k] for k in trained}, mesh,
                               float(config.sharding_tolerance))
  except ValueError as e:
    raise ConfigError(str(e)) from None

  check_init_from_model(config.model, config.get("init_from", ""))

  # ---- data --------------------------------------------------------------------------------------
  if read_data:
    experiment.check_data()  # resolves (or generates) the data and loads the tokenizer
  if verbose:
    print(f"mesh {sizes} over {len(devices)} {devices[0].device_kind} device(s), "
          f"{jax.process_count()} process(es)", flush=True)
  return Run(config, workdir, experiment, mesh, rules, tx, abstract, shardings)


def _resolve_epochs(config, experiment, verbose: bool) -> None:
  """config.epochs -> steps (and warm-up / decay boundaries) from the usable training records."""
  count = getattr(experiment, "train_examples", None)
  if count is None:
    raise ConfigError(f"epochs: {type(experiment).__name__} trains by steps; set steps, not "
                      f"epochs ({config.epochs})")
  examples = count()
  changed = resolve_epochs(config, examples)
  if verbose:
    shown = ", ".join(f"{k} {v}" for k, v in changed.items())
    print(f"{config.epochs:g} epochs of {examples} training examples at batch "
          f"{config.batch_size}: {shown}", flush=True)


def identity(run: Run) -> dict:
  """What this run's checkpoints are trained as (train/run_identity.py)."""
  return run_identity(run.config.model, run.experiment.tokenizer)


def check_workdir_matches(run: Run) -> None:
  """A workdir with checkpoints must have been trained as this run's config would train: the
  model fields that change the parameters or their meaning, and the tokenizer (ConfigError
  naming the first difference; nothing is read or written)."""
  directory = run.workdir / "checkpoints"
  # read from the file system, not through an orbax manager: making one is a collective step of
  # every process, and this check runs before the run's own manager exists
  if directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir()):
    check_resume_identity(run.workdir, identity(run))


def write_workdir(run: Run) -> None:
  """config.json (the config as run), data_paths.json and identity.json into the workdir
  (process 0)."""
  if start_workdir(run.workdir, run.config, run.experiment.data_paths):
    write_identity(run.workdir, identity(run))


def initial_state(run: Run, checkpoints: Checkpointer, *, training: bool):
  """(state, data-iterator state or None): the newest checkpoint that verifies against its
  digests (newer ones that fail are named, and set aside when training; none verifying is a
  CorruptCheckpoint, never a silent fresh start), else a fresh state with init_from's
  parameters in the experiment's pretrained sub-tree."""
  if checkpoints.latest_step() is not None:
    state, data_state, step = checkpoints.restore_newest_valid(run.abstract, run.shardings,
                                                               set_aside=training)
    print(f"resumed from step {step} of {checkpoints.directory} (digests verified)",
          flush=True)
    return state, data_state
  config, key = run.config, run.experiment.pretrained_key
  state = create_state(config, run.tx, run.shardings, run.experiment.boxed_params)
  if config.init_from:
    abstract, shardings = run.abstract["params"], run.shardings["params"]
    try:  # a checkpoint of the whole experiment's parameters (a task's backbone and head:
      # a fine-tuned workdir, or `convert paddle --task`) fills all of them
      if key is not None and stored_param_keys(config.init_from) == set(abstract):
        key = None
    except (FileNotFoundError, ValueError) as e:
      raise ConfigError(f"init_from {e}") from None
    if key is not None:
      abstract, shardings = abstract[key], shardings[key]
    try:
      params = restore_params(config.init_from, abstract, shardings)
    except (FileNotFoundError, ValueError) as e:
      raise ConfigError(f"init_from {e}") from None
    state = state_with_params(state, params, run.shardings, key)
    what = "the parameters" if key is None else f"the {key} (the rest starts fresh)"
    print(f"initialised {what} from {config.init_from}", flush=True)
  elif not training:
    print("warning: no checkpoint and no init_from: evaluating a randomly initialised model",
          flush=True)
  return state, None


def _parameter_table(run: Run) -> str:
  key = run.experiment.pretrained_key
  return parameter_table(run.abstract["params"], run.shardings["params"],
                         expand=() if key is None else (key,))


def compiled_step(run: Run, state, first_batch):
  """The jitted train step (experiment loss, donated state), compiled ahead of time for the
  first batch's shapes, and its FLOPs per step by XLA's count."""
  mesh = run.mesh
  batch_shardings = jax.tree.map(lambda x: batch_sharding(mesh, np.ndim(x)), first_batch)
  step_fn = jit_train_step(run.config, run.tx, mesh, run.shardings, batch_shardings,
                           loss_fn=run.experiment.loss)
  compiled = step_fn.lower(state, to_global_arrays(first_batch, mesh)).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return compiled, float((cost or {}).get("flops", 0.0)) * jax.device_count()


def evaluate_and_write(run: Run, params, step: int, writer: MetricWriter) -> dict:
  """The experiment's evaluation of `params`: eval_metrics.json, predictions.jsonl (when it has
  predictions), an 'eval' row in metrics.jsonl / TensorBoard, and a console line."""
  start_time = time.perf_counter()
  result = run.experiment.evaluate(params)
  if result is None:
    return {}
  metrics, predictions = result
  metrics = dict(metrics)
  if run.experiment.skipped:
    metrics["skipped"] = dict(run.experiment.skipped)
  written = [write_eval_metrics(run.workdir, metrics)]
  if predictions is not None:
    written.append(write_predictions(run.workdir, predictions))
  writer.write(step, {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
               prefix="eval")
  if jax.process_index() == 0:
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    print(f"eval @ {step} ({time.perf_counter() - start_time:.0f} s): {shown}", flush=True)
    print("wrote " + " and ".join(str(p) for p in written), flush=True)
  return metrics


# ---- the modes ---------------------------------------------------------------------------------

def train_and_evaluate(config, workdir) -> dict:
  """Trains the config's experiment, resuming from <workdir>/checkpoints with the data-iterator
  state; evaluates every eval_every steps and at the end. Returns the last eval metrics."""
  run = start(config, workdir, "train")
  with holding_workdir(run.workdir, jax.process_index() == 0):
    check_workdir_matches(run)
    return _train(run)


def _train(run: Run) -> dict:
  config, experiment, mesh = run.config, run.experiment, run.mesh
  primary = jax.process_index() == 0
  checkpoints = Checkpointer(run.workdir / "checkpoints", every=config.checkpoint_every,
                             keep=config.keep_checkpoints, use_async=config.async_checkpoints)
  writer = data = None
  last_eval, evaluated_at = {}, None
  try:
    with run.context(), watching_peers(config, checkpoints.directory, RUN_ERRORS), \
        PreemptionNotice() as preemption:
      # ---- state: resumed (verified), or fresh with init_from's parameters ----------------------
      state, data_state = initial_state(run, checkpoints, training=True)
      step = int(state["step"])
      write_workdir(run)
      writer = MetricWriter(run.workdir, sync_seconds=config.get("metrics_sync_seconds", 60.0))
      if primary:
        print(_parameter_table(run), flush=True)

      # ---- input pipeline -----------------------------------------------------------------------
      data = experiment.train_batches()
      if data_state is not None:
        data.set_state(data_state)
      if experiment.skipped:
        print(f"skipped training records: {experiment.skipped}", flush=True)

      if step < config.steps:
        # ---- the jitted step, compiled ahead of time ---------------------------------------------
        batch = next(data)
        step_fn, step_flops = compiled_step(run, state, batch)
        peak = float(config.peak_flops) or measured_peak_flops()
        metrics_out = DelayedMetrics(
            writer, Progress(config.steps, step), log_every=config.log_every,
            total_steps=config.steps, step_flops=step_flops, peak_flops=peak,
            examples_per_step=sum(experiment.batch_sizes(config).values()))

        # ---- the loop ---------------------------------------------------------------------------
        while step < config.steps:
          start_time = time.perf_counter()
          if batch is None:
            batch = next(data)
          wait = time.perf_counter() - start_time
          tokens = batch_tokens(batch)
          state, metrics = step_fn(state, to_global_arrays(batch, mesh))
          batch = None
          metrics_out.flush()  # the previous step's, read while this one runs
          step += 1
          metrics_out.push(step, metrics, time.perf_counter() - start_time, wait, tokens)
          if step % config.checkpoint_every == 0 or step == config.steps:
            metrics_out.flush()  # a non-finite step is never saved
            checkpoints.save(step, state, data.get_state(), force=step == config.steps)
          if preemption.reached(step):  # asked to stop (SIGTERM): the same step on every process
            metrics_out.flush()
            if checkpoints.latest_step() != step:
              checkpoints.save(step, state, data.get_state(), force=True)
            checkpoints.wait()
            print(f"preempted: saved step {step} to {checkpoints.directory}; the next start "
                  "resumes there", flush=True)
            return {}
          if (config.eval_every and step % config.eval_every == 0) or step == config.steps:
            last_eval, evaluated_at = evaluate_and_write(run, state["params"], step, writer), step
        metrics_out.flush()

      # ---- final evaluation (a run resumed at its last step evaluates too) ----------------------
      if evaluated_at != step:
        last_eval = evaluate_and_write(run, state["params"], step, writer)
  finally:
    if data is not None:
      data.close()  # input worker processes
    checkpoints.close()
    if writer is not None:
      writer.close()
  return last_eval


def _trained_params(run: Run):
  """(params, step) of the latest checkpoint, or fresh ones with init_from's weights."""
  checkpoints = Checkpointer(run.workdir / "checkpoints", every=1, keep=1, use_async=False,
                             create=False)
  try:
    state, _ = initial_state(run, checkpoints, training=False)
  finally:
    checkpoints.close()
  return state["params"], int(state["step"])


def evaluate(config, workdir) -> dict:
  """Evaluates the latest checkpoint (or init_from: zero-shot); returns the metrics."""
  run = start(config, workdir, "eval")
  with holding_workdir(run.workdir, jax.process_index() == 0):
    check_workdir_matches(run)
    write_workdir(run)
    writer = MetricWriter(run.workdir, sync_seconds=run.config.get("metrics_sync_seconds", 60.0))
    try:
      with run.context(), watching_peers(run.config, run.workdir / "checkpoints", RUN_ERRORS):
        params, step = _trained_params(run)
        metrics = evaluate_and_write(run, params, step, writer)
    finally:
      writer.close()
  if not metrics:
    raise ConfigError("nothing to evaluate: data.eval_dir is empty")
  return metrics


def predict(config, workdir) -> list:
  """Writes <workdir>/predictions.jsonl for data.predict_dir (default: the eval split)."""
  run = start(config, workdir, "predict")
  with holding_workdir(run.workdir, jax.process_index() == 0):
    check_workdir_matches(run)
    write_workdir(run)
    with run.context(), watching_peers(run.config, run.workdir / "checkpoints", RUN_ERRORS):
      params, _ = _trained_params(run)
      rows = run.experiment.predict(params)
    path = write_predictions(run.workdir, rows)
  if path is not None:
    print(f"wrote {path}", flush=True)
  return rows


def check(config, workdir) -> dict:
  """One sharded forward pass of the pretraining loss on a random batch: prints the parameter
  table and every loss term, writes config.json and forward_metrics.json. No data is read."""
  from unimo_jax.objectives.pretraining_loss import pretraining_loss
  run = start(config, workdir, "check", read_data=False)
  config, mesh = run.config, run.mesh
  start_workdir(run.workdir, config)
  with run.context():
    print(_parameter_table(run), flush=True)
    boxed_params = run.experiment.boxed_params
    params = jax.jit(lambda: nn.unbox(boxed_params(jax.random.key(config.seed))),
                     out_shardings=run.shardings["params"])()
    host = run.experiment.random_batch(config.seed)
    batch = jax.tree.map(lambda x: jax.device_put(x, batch_sharding(mesh, np.ndim(x))), host)
    loss_fn = jax.jit(lambda p, b: pretraining_loss({"params": p}, b, config, mesh=mesh))
    start_time = time.perf_counter()
    total, metrics = jax.block_until_ready(loss_fn(params, batch))
    seconds = time.perf_counter() - start_time
  metrics = {k: float(v) for k, v in sorted(metrics.items())}
  for key, value in metrics.items():
    print(f"  {key:<36}{value:>12.4f}")
  print(f"total loss {float(total):.4f}; compiled and ran in {seconds:.1f} s", flush=True)
  if not np.isfinite(float(total)):
    raise ConfigError(f"non-finite pretraining loss {float(total)} on a random batch")
  if jax.process_index() == 0:
    (run.workdir / "forward_metrics.json").write_text(json.dumps(metrics, indent=2))
  return metrics
