"""UNIMO pretraining on text, images and image-text pairs.

Presets: tiny (CPU, the built-in synthetic scenes), base and large (UNIMO / RoBERTa sizes).

  python -m unimo_jax.main --config=configs/pretrain.py:tiny --workdir=/tmp/unimo_tiny
  python -m unimo_jax.main --config=configs/pretrain.py:base --workdir=DIR \\
      --config.data.text_dir=... --config.data.image_dir=... --config.data.pair_dir=... \\
      --config.data.tokenizer=... --config.init_from=roberta_base_ckpt --config.mesh.fsdp=8

Any field can be overridden with --config.<field>=<value>; unknown fields are rejected.
"""

import ml_collections

from unimo_jax.data.examples import data_config
from unimo_jax.model.presets import PRESETS, model_config
from unimo_jax.parallel import DEFAULT_LOGICAL_AXIS_RULES


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  preset = arg or "tiny"
  if preset not in PRESETS:
    raise ValueError(f"configs/pretrain.py: expected a preset from {PRESETS}, found {preset!r}")
  small = preset == "tiny"
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.seed = 0
  c.model = model_config(preset)
  if small:
    # The synthetic scenes: a 128-word vocabulary, and no dropout (a few thousand steps on clean
    # generated data do not overfit; with dropout 0.1, R@1 after 500 steps was 0.08 against 0.16).
    c.model.vocab_size = 128
    c.model.dropout_rate = 0.0
    c.model.attention_dropout_rate = 0.0

  # Mesh: ('data', 'fsdp', 'tensor'); -1 takes the remaining devices.
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.logical_axis_rules = [list(rule) for rule in DEFAULT_LOGICAL_AXIS_RULES]

  # Global examples per step in each stream (text -> MLM + seq2seq, image -> MRM,
  # pair -> MLM, MRM, caption and CMCL over the whole global batch).
  c.batch = ml_collections.ConfigDict()
  c.batch.text = 8 if small else 256
  c.batch.image = 8 if small else 256
  c.batch.pair = 64 if small else 512

  # Data: dataset directories written by `python -m unimo_jax.data`; empty = synthetic scenes,
  # generated into data.synthetic_dir (default <workdir>/synthetic_scenes) on first use.
  c.data = data_config()
  c.data.synthetic_dir = ""
  c.data.synthetic_pairs = 50_000
  c.data.eval_dir = ""  # held-out pairs for evaluation (synthetic: <synthetic_dir>/eval/pair)
  if small:
    c.data.max_text_length = 64
    c.data.max_caption_length = 20  # the longest synthetic caption or paraphrase is 19 tokens
    c.data.max_regions = 4
    c.data.max_predictions = 8
    c.data.overlap_ratio = 0.3
    # Retrieved synthetic images share the pair's objects but not its layout; as positives they
    # pull apart the relation the twins test, so the tiny run uses none.
    c.data.cmcl_extra_images = 0
    # Read and transform in the training thread: on 2 cores, reader threads contend with the
    # step for the GIL and the cores; the jitted step runs asynchronously meanwhile.
    c.data.num_threads = 0

  # Weight of every loss term; 0 reports a term without training on it.
  c.loss_weights = ml_collections.ConfigDict({
      "text_mlm": 1.0, "text_seq2seq": 1.0, "image_mrm": 1.0, "pair_mlm": 1.0, "pair_mrm": 1.0,
      "pair_caption": 1.0, "cmcl": 1.0})
  c.objectives = ml_collections.ConfigDict()
  c.objectives.label_smoothing = 0.0  # seq2seq / caption targets
  c.objectives.mrm_regression_weight = 1.0
  c.objectives.mrm_classification_weight = 1.0
  c.objectives.cmcl_chunk_size = 0  # 0: one [local, global] logits block; >0: chunked shard_map

  # Optimiser (UNIMO: AdamW b2 0.98, eps 1e-6, clip 1.0, linear warmup + linear decay).
  c.steps = 3600 if small else 500_000
  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.learning_rate = 2e-3 if small else 5e-5
  c.optimizer.warmup_steps = 150 if small else 10_000
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.98
  c.optimizer.eps = 1e-6
  c.optimizer.weight_decay = 0.01
  c.optimizer.grad_clip_norm = 1.0
  c.optimizer.accumulation_steps = 1

  # Checkpoints, logging, evaluation.
  c.init_from = ""  # a params checkpoint (e.g. converted RoBERTa) for a fresh run
  c.checkpoint_every = 1000 if small else 5000
  c.keep_checkpoints = 3
  c.async_checkpoints = True
  c.log_every = 50 if small else 100
  c.eval_every = 1000 if small else 10_000
  c.eval_batch = 250 if small else 256
  c.peak_flops = 0.0  # per-device peak FLOP/s for MFU; 0 = measure a matmul at start-up

  # Multi-host (TPU VMs need none of these; elsewhere set all three or the JAX_* env vars).
  c.distributed = ml_collections.ConfigDict()
  c.distributed.coordinator_address = ""
  c.distributed.num_processes = 0
  c.distributed.process_id = -1
  return c
