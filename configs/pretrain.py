"""UNIMO pretraining on text, images and image-text pairs.

Presets: tiny (CPU, the built-in synthetic scenes), base and large (UNIMO / RoBERTa sizes).

  python -m unimo_jax.main --config=configs/pretrain.py:tiny --workdir=/tmp/unimo_tiny
  python -m unimo_jax.main --config=configs/pretrain.py:base --workdir=DIR \\
      --config.data.text_dir=... --config.data.image_dir=... --config.data.pair_dir=... \\
      --config.data.tokenizer=... --config.init_from=roberta_base_ckpt

Any field can be overridden with --config.<field>=<value>; unknown fields are rejected.

Sized for TPU (`--mode=compile`; step time and MFU are estimates of XLA's TPU cost model):
base on v5e-16 replicates the parameters (pure data parallelism, mesh data 16;
batch 256 texts + 256 images + 512 pairs), sums each chip's gradients once per step, each chip
then updating its sixteenth of the parameters with its sixteenth of Adam's moments before the
parameters are all-gathered (gradient_sum 'scatter'), and each layer keeps its attention
probabilities for the backward pass (model.remat 'attention', whose kept bfloat16
probabilities the softmax's backward reads): 8.41 GiB per chip of 15.75, 47 % free; estimated
236 ms per step, MFU 38.7 %, against 239 ms and 38.2 % with every chip updating all the
parameters (gradient_sum 'once', 8.38 GiB), 255 ms and 35.7 % with the float32 softmax
recomputed for the backward pass (8.40 GiB), 271 ms and 33.7 % with full remat (9.13 GiB),
331 ms and 27.5 % with XLA's per-pass gradient sums (and float32 attention probabilities, the
model before), and 405 ms and 22.5 % sharded over fsdp 16 (3.21 GiB, 80 % free), whose weight
gathers data parallelism saves.
large on v5p-32 (fsdp 16, the same batch) keeps every activation (model.remat 'none'): 38.46
GiB per chip of 95.74, 60 % free; estimated 367 ms per step, MFU 36.6 % (406 ms and 33.1 %, 39.93
GiB, before the attention probabilities were kept in bfloat16 and read by the softmax's
backward; with full remat, compiled before those: 4.44 GiB, 514 ms, 26.1 %). On v5p-64 add
--config.mesh.data=2 (data 2 x fsdp 16; fsdp 32 leaves the replicated biases 3 % over an even
split, past the start-up sharding check): 25.98 GiB per chip, estimated 197 ms, MFU 34.0 %.
"""

import ml_collections

from unimo_jax.train.config import (common_config, loop_config, optimizer_config,
                                    synthetic_data_config)


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = common_config("configs/pretrain.py", arg)  # preset, seed, model, mesh, rules, distributed
  small = c.preset == "tiny"
  if c.preset == "base":
    # 0.49 GiB of float32 parameters fit every v5e chip whole: no weight gathers in each pass,
    # an 18 % shorter step by the compile report (docstring)
    c.mesh.data, c.mesh.fsdp = -1, 1
    # each chip sums its ten passes' gradients itself, then the chips sum them once per parameter
    # (train/data_parallel.py), instead of once per pass: 20.5 against 25.2 ms per layer with the
    # bfloat16 attention probabilities; each chip then keeping Adam's moments for a sixteenth of
    # the parameters and updating that sixteenth ('scatter', ZeRO's first stage), the
    # step is 236 against 239 ms (1 and 2 layers: 40.0 and 57.8 against 41.8 and 59.8 ms; the
    # whole update on every chip alone: 8.5 ms per step)
    # (docstring; README, "Where the base step's time goes")
    c.gradient_sum = "scatter"
    # each layer keeps its attention probabilities for the backward pass instead of recomputing
    # the scores and softmax: 19.2 against 20.5 ms per layer and 8.40 against 9.13 GiB per chip,
    # and 17.9 ms and 8.38 GiB since the softmax's backward reads them (layers.softmax_as)
    # (docstring; README, "Where the base step's time goes")
    c.model.remat = "attention"
  if c.preset == "large":
    # a v5p chip's 95 GiB hold all 24 layers' activations: no recompute, a 21 % shorter step
    # by the compile report (docstring)
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
  # sum of all). README "CMCL positives" gives the measured reason for the default.
  c.objectives.cmcl_positive_form = "mean_log"

  # Optimiser (UNIMO: AdamW b2 0.98, eps 1e-6, clip 1.0, linear warmup + linear decay).
  c.optimizer = optimizer_config(2e-3 if small else 5e-5, 150 if small else 10_000)

  # Steps, checkpoints, logging, evaluation; init_from: a params checkpoint (e.g. converted
  # RoBERTa) for a fresh run.
  loop_config(c, steps=1500 if small else 500_000, checkpoint_every=500 if small else 5000,
              keep_checkpoints=3, log_every=50 if small else 100,
              eval_every=500 if small else 10_000, eval_batch=250 if small else 256)
  return c
