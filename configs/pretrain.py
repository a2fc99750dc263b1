"""UNIMO pretraining on text, images and image-text pairs.

Presets: tiny (CPU, synthetic data), base and large (UNIMO / RoBERTa sizes).

  python -m unimo_jax.main --config=configs/pretrain.py:tiny --workdir=/tmp/unimo_tiny
  python -m unimo_jax.main --config=configs/pretrain.py:base --workdir=DIR --config.mesh.fsdp=8

Any field can be overridden with --config.<field>=<value>; unknown fields are rejected.
"""

import ml_collections

from unimo_jax.model.presets import PRESETS, model_config
from unimo_jax.parallel import DEFAULT_LOGICAL_AXIS_RULES


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  preset = arg or "tiny"
  if preset not in PRESETS:
    raise ValueError(f"configs/pretrain.py: expected a preset from {PRESETS}, found {preset!r}")
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.seed = 0
  c.model = model_config(preset)

  # Mesh: ('data', 'fsdp', 'tensor'); -1 takes the remaining devices.
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.logical_axis_rules = [list(rule) for rule in DEFAULT_LOGICAL_AXIS_RULES]

  # Examples per step in each sub-batch (global), and their shapes.
  small = preset == "tiny"
  c.batch = ml_collections.ConfigDict()
  c.batch.text = 8 if small else 256
  c.batch.image = 8 if small else 256
  c.batch.pair = 8 if small else 512
  c.batch.text_length = 32 if small else 512
  c.batch.pair_text_length = 16 if small else 40
  c.batch.regions = 8 if small else 100
  c.batch.cmcl_extra_texts = 2 if small else 4
  c.batch.cmcl_extra_images = 1 if small else 2

  # Weight of every loss term; 0 reports a term without training on it.
  c.loss_weights = ml_collections.ConfigDict({
      "text_mlm": 1.0, "text_seq2seq": 1.0, "image_mrm": 1.0, "pair_mlm": 1.0, "pair_mrm": 1.0,
      "pair_caption": 1.0, "cmcl": 1.0})
  c.objectives = ml_collections.ConfigDict()
  c.objectives.label_smoothing = 0.0  # seq2seq / caption targets
  c.objectives.mrm_regression_weight = 1.0
  c.objectives.mrm_classification_weight = 1.0
  c.objectives.cmcl_chunk_size = 0  # 0: one [local, global] logits block; >0: chunked shard_map
  return c
