"""UNIMO pretraining on text, images and image-text pairs.

Presets: tiny (CPU, the built-in synthetic scenes), base and large (UNIMO / RoBERTa sizes).

  python -m unimo_jax.main --config=configs/pretrain.py:tiny --workdir=/tmp/unimo_tiny
  python -m unimo_jax.main --config=configs/pretrain.py:base --workdir=DIR \\
      --config.data.text_dir=... --config.data.image_dir=... --config.data.pair_dir=... \\
      --config.data.tokenizer=... --config.init_from=roberta_base_ckpt

Any field can be overridden with --config.<field>=<value>; unknown fields are rejected.

TPU (XLA cost-model estimates, docs/tpu_sizing.md): base on v5e-16, 8.41 GiB per chip,
~236 ms per step, MFU 38.7 %; large on v5p-32, 38.46 GiB per chip, ~367 ms, MFU 36.6 %
(on v5p-64 add --config.mesh.data=2).
"""

import ml_collections

from unimo_jax.train.config_parts import (common_config, loop_config, optimizer_config,
                                    synthetic_data_config)


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = common_config("configs/pretrain.py", arg)  # preset, seed, model, mesh, rules, distributed
  small = c.preset == "tiny"
  if c.preset == "base":
    # The float32 parameters fit every v5e chip whole, so no pass gathers weights: data
    # parallelism is the shorter step (docs/notes/base_step_time.md has the compiles).
    c.mesh.data, c.mesh.fsdp = -1, 1
    # Each chip sums its passes' gradients itself, then the chips reduce-scatter them once per
    # parameter, and each chip updates its slice with its slice of Adam's moments (ZeRO stage 1,
    # train/data_parallel.py): one sum per step instead of one per pass, and a sliced update.
    c.gradient_sum = "scatter"
    # Keeping the attention probabilities spares recomputing the scores and the softmax in the
    # backward pass, and XLA then schedules it with fewer live buffers.
    c.model.remat = "attention"
  if c.preset == "large":
    # a v5p chip's HBM holds all 24 layers' activations: nothing to recompute
    c.model.remat = "none"

  # Global examples per step in each stream (text -> MLM + seq2seq, image -> MRM,
  # pair -> MLM, MRM, caption and CMCL over the whole global batch).
  c.batch = ml_collections.ConfigDict()
  c.batch.text = 8 if small else 256
  c.batch.image = 8 if small else 256
  c.batch.pair = 64 if small else 512

  # Data: dataset directories written by `python -m unimo_jax.data`; empty = synthetic scenes,
  # generated into data.synthetic_dir (default <workdir>/synthetic_scenes) on first use.
  c.data = synthetic_data_config(c.preset)  # eval_dir: held-out pairs (synthetic: eval/pair)
  if small:
    c.data.max_predictions = 8
    c.data.overlap_ratio = 0.3
    # Retrieved synthetic images share the pair's objects but not its layout; as positives they
    # pull apart the relation the twins test, so the tiny run uses none.
    c.data.cmcl_extra_images = 0

  # Weight of every loss term; 0 reports a term without training on it.
  c.loss_weights = ml_collections.ConfigDict({
      "text_mlm": 1.0, "text_seq2seq": 1.0, "image_mrm": 1.0, "pair_mlm": 1.0, "pair_mrm": 1.0,
      "pair_caption": 1.0, "cmcl": 1.0})
  c.objectives = ml_collections.ConfigDict()
  c.objectives.label_smoothing = 0.0  # seq2seq / caption targets
  c.objectives.mrm_regression_weight = 1.0
  c.objectives.mrm_classification_weight = 1.0
  c.objectives.cmcl_chunk_size = 0  # 0: one [local, global] logits block; >0: chunked shard_map
  # How a row with several positives (paraphrases, retrieved texts/images) is scored:
  # 'mean_log' averages -log softmax over them; 'log_sum' is the paper's -log(sum of positives /
  # sum of all); docs/notes/cmcl_positive_forms.md has the measured reason for the default.
  c.objectives.cmcl_positive_form = "mean_log"

  # Optimiser (UNIMO: AdamW b2 0.98, eps 1e-6, clip 1.0, linear warmup + linear decay).
  c.optimizer = optimizer_config(2e-3 if small else 5e-5, 150 if small else 10_000)

  # Steps, checkpoints, logging, evaluation; init_from: a params checkpoint (e.g. converted
  # RoBERTa) for a fresh run.
  loop_config(c, steps=1500 if small else 500_000, checkpoint_every=500 if small else 5000,
              keep_checkpoints=3, log_every=50 if small else 100,
              eval_every=500 if small else 10_000, eval_batch=250 if small else 256)
  return c
