"""The fields every run config shares (pretraining and fine-tuning): preset, seed, model, mesh,
logical-axis rules, multi-process settings, the synthetic-scenes data fields, the optimizer and
the training loop's schedule (steps, checkpoints, logging, evaluation)."""

import importlib.util
import pathlib

import ml_collections

from unimo_jax.data.pipeline.examples import data_config
from unimo_jax.model.presets import PRESETS, model_config
from unimo_jax.parallel import DEFAULT_LOGICAL_AXIS_RULES


def config_from_path(path, preset: str) -> ml_collections.ConfigDict:
  """The config file at `path` (configs/<name>.py) at `preset`: its get_config(preset)."""
  path = pathlib.Path(path)
  spec = importlib.util.spec_from_file_location(f"unimo_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset)


def common_config(config_file: str, preset: str) -> ml_collections.ConfigDict:
  preset = preset or "tiny"
  if preset not in PRESETS:
    raise ValueError(f"{config_file}: expected a preset from {PRESETS}, found {preset!r}")
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.seed = 0
  c.model = model_config(preset)
  if preset == "tiny":
    # The synthetic scenes: a 128-word vocabulary, and no dropout (a few thousand steps on clean
    # generated data do not overfit, and dropout halves early retrieval; docs/notes/embedded_default.md).
    c.model.vocab_size = 128
    c.model.dropout_rate = 0.0
    c.model.attention_dropout_rate = 0.0
    # Pool the mean of each block, not its first slot: at initialisation the first slot barely
    # sees the regions, and the mean reaches in 1,500 steps what the first slot needs 3,600 for
    # (docs/notes/embedded_default.md).
    c.model.pooling = "mean"
  else:
    # Sized by --mode=compile for TPU slices (configs/pretrain.py): bfloat16 compute (parameters
    # stay float32), layers scanned (one compiled layer body: a 12-layer step compiles about as
    # fast as an unrolled 1-layer one) and fully rematerialised (the unrolled base step without
    # remat does not fit a v5e chip); the presets that fit more override it.
    c.model.dtype = "bfloat16"
    c.model.scan_layers = True
    c.model.remat = "full"
  # Mesh: ('data', 'fsdp', 'tensor'); -1 takes the remaining devices. The TPU presets shard
  # parameters and optimizer state over every chip (fsdp), except pretraining base, which
  # replicates them (configs/pretrain.py); the tiny one replicates them.
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  if preset != "tiny":
    c.mesh.data, c.mesh.fsdp = 1, -1
  c.logical_axis_rules = [list(rule) for rule in DEFAULT_LOGICAL_AXIS_RULES]
  # How a step's gradients are summed over the batch axes: 'partitioner' (XLA's SPMD partitioner
  # places the sums, pass by pass) or 'once' (each device sums its own passes, then one psum per
  # parameter; parameters replicated, pretraining only: train/data_parallel.py) or 'scatter'
  # (the same sums as one reduce-scatter per parameter, the optimizer moments sliced over the
  # batch devices and each slice of the parameters updated on one device, then all-gathered).
  c.gradient_sum = "partitioner"
  # Start-up check: parameters + optimizer state per device may exceed an even split over
  # fsdp x tensor by this fraction (biases and LayerNorms stay whole; in the 64-wide tiny model
  # they are a larger share, so it allows more).
  c.sharding_tolerance = 0.25 if preset == "tiny" else 0.02
  # Dropout keys: 'threefry2x32' (JAX's default) or 'rbg' (XLA's RngBitGenerator). Threefry's
  # draws are ordinary ops that XLA partitions like the activations they mask: each chip draws
  # its shard, and the masks do not depend on the sharding. RngBitGenerator is not partitioned
  # (short of libtpu's unsafe flag): every chip draws each mask at its global shape and keeps its
  # slice, which makes the base step half again as long (docs/notes/base_step_time.md). rbg
  # compiles faster, for what-if compiles.
  c.rng_impl = "threefry2x32"
  # Multi-host (TPU VMs need none of the first three; elsewhere set all three or the JAX_* env
  # vars). peer_timeout_s: a process silent that long counts as lost, and the others exit with
  # one line naming it (train/peers.py); 0 keeps JAX's own handling (an abort after 100 s).
  c.distributed = ml_collections.ConfigDict(
      {"coordinator_address": "", "num_processes": 0, "process_id": -1, "peer_timeout_s": 30})
  return c


def synthetic_data_config(preset: str) -> ml_collections.ConfigDict:
  """The data config with the synthetic-scenes fields; the tiny preset's lengths fit the scenes
  (and must agree between pretraining and fine-tuning)."""
  d = data_config()
  d.synthetic_dir = ""  # empty: <workdir>/synthetic_scenes, generated on first use
  d.synthetic_pairs = 50_000
  # Also write each training scene's hard-negative images (its mirror, a binding swap) as
  # training pairs linked by twin_pairs, for data.cmcl_twin_fraction to co-batch.
  d.synthetic_twin_scenes = False
  d.eval_dir = ""  # held-out data (synthetic: generated with the scenes)
  if preset == "tiny":
    d.max_text_length = 64
    d.max_caption_length = 20  # the longest synthetic caption or paraphrase is 19 tokens
    d.max_regions = 4
    # One thread builds the next batches while the jitted step runs: on 2 cores the fastest of
    # building in the loop, one thread, or one worker process (docs/notes/input_pipeline.md).
    d.num_threads = 1
  return d


def optimizer_config(learning_rate: float, warmup_steps: int) -> ml_collections.ConfigDict:
  """UNIMO's optimiser: AdamW b1 0.9, b2 0.98, eps 1e-6, weight decay 0.01, clip 1.0, linear
  warmup to `learning_rate` over `warmup_steps` then linear decay (train/optimizer.py)."""
  return ml_collections.ConfigDict({
      "learning_rate": learning_rate, "warmup_steps": warmup_steps, "b1": 0.9, "b2": 0.98,
      "eps": 1e-6, "weight_decay": 0.01, "grad_clip_norm": 1.0, "accumulation_steps": 1,
      # 'linear' (warmup + linear decay) or 'piecewise' (x decay_factor at decay_boundaries)
      "schedule": "linear", "decay_factor": 0.1, "decay_boundaries": (),
      # with the config's `epochs` (fine-tuning): warmup_steps = warmup_proportion x steps
      # (when > 0) and decay_boundaries = decay_epochs x steps per epoch (when set)
      "warmup_proportion": 0.0, "decay_epochs": ()})


def resolve_epochs(config, train_examples: int) -> dict:
  """With config.epochs > 0, the steps of that many passes over `train_examples` at the global
  batch (UNIMO's max_train_steps = epoch x examples // batch), the warm-up as a proportion of
  them and the decay boundaries in epochs, written into `config` (as the run's config.json then
  shows); returns what changed. Without epochs the config is left as it is."""
  epochs = float(config.get("epochs", 0) or 0)
  if epochs <= 0:
    return {}
  per_epoch = train_examples / int(config.batch_size)
  o = config.optimizer
  config.steps = max(1, int(epochs * train_examples // int(config.batch_size)))
  changed = {"steps": config.steps}
  if o.warmup_proportion > 0:
    o.warmup_steps = changed["optimizer.warmup_steps"] = int(config.steps * o.warmup_proportion)
  if o.decay_epochs:
    o.decay_boundaries = changed["optimizer.decay_boundaries"] = tuple(
        int(e * per_epoch) for e in o.decay_epochs)
  return changed


def loop_config(c: ml_collections.ConfigDict, *, steps: int, checkpoint_every: int,
                keep_checkpoints: int, log_every: int, eval_every: int, eval_batch: int) -> None:
  """Sets the training loop's fields on `c` (train/driver.py reads them)."""
  c.steps = steps
  c.init_from = ""  # params to start from: a params checkpoint, a step directory or a workdir
  c.checkpoint_every = checkpoint_every
  c.keep_checkpoints = keep_checkpoints
  c.async_checkpoints = True
  c.log_every = log_every
  c.eval_every = eval_every  # 0: evaluate at the end only
  c.eval_batch = eval_batch
  c.peak_flops = 0.0  # per-device peak FLOP/s for MFU; 0 = measure a matmul at start-up
  c.metrics_sync_seconds = 60.0  # gs:// workdirs: metric rows and TensorBoard sent this often
