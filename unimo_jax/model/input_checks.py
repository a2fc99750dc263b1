"""Checks a model batch before tracing, so bad input fails with a message, not an XLA error.

A batch is a dict of arrays (numpy or jax; only shapes and dtypes are read, so this works under jit):
  text    input_ids [batch, length] int; optional position_ids [batch, length] int,
          target_mask [batch, length] bool (seq2seq / caption target), lm_positions [batch, P] int
          (text positions at which to compute LM logits; all text positions when absent),
          role_ids / turn_ids [batch, length] int (dialog models), text_delta
          [batch, length, hidden] (a perturbation of the summed embeddings, VILLA);
  regions region_features [batch, regions, region_feature_dim], region_locations [batch, regions, 5],
          region_mask [batch, regions] (1 = real box), region_delta
          [batch, 1 + regions, region_feature_dim] (a perturbation of the features, VILLA);
  pixels  pixels [batch, image_size, image_size, image_channels].
"""

import numpy as np

TEXT_FIELDS = ("input_ids", "position_ids", "target_mask", "lm_positions")
REGION_FIELDS = ("region_features", "region_locations", "region_mask")


def _shape(batch, name):
  return tuple(np.shape(batch[name]))


def _expect(batch, name, expected, description):
  """Raises ValueError unless batch[name] has shape `expected` (None entries match anything)."""
  found = _shape(batch, name)
  ok = len(found) == len(expected) and all(e is None or e == f for e, f in zip(expected, found))
  if not ok:
    shown = "[" + ", ".join("*" if e is None else str(e) for e in expected) + "]"
    raise ValueError(f"batch[{name!r}]: expected shape {shown} ({description}), found {list(found)}")


def _expect_integer(batch, name):
  value = batch[name]
  dtype = np.dtype(value.dtype if hasattr(value, "dtype") else np.asarray(value).dtype)
  if not np.issubdtype(dtype, np.integer):
    raise ValueError(f"batch[{name!r}]: expected an integer array, found dtype {dtype}")


def has_text(batch) -> bool:
  return "input_ids" in batch


def has_image(batch) -> bool:
  return "region_features" in batch or "pixels" in batch


def validate_batch(batch, config, mask_kind: str = "bidirectional", cache_mode=None) -> None:
  """Raises ValueError naming the field, the expected and the found shape for any bad field."""
  if not hasattr(batch, "keys"):
    raise ValueError(f"batch: expected a dict of arrays, found {type(batch).__name__}")
  if not has_text(batch) and not has_image(batch):
    raise ValueError("batch: expected text ('input_ids') and/or an image ('region_features' or "
                     f"'pixels'), found fields {sorted(batch)}")
  batch_size = None
  if has_text(batch):
    _expect_integer(batch, "input_ids")
    if len(_shape(batch, "input_ids")) != 2:
      _expect(batch, "input_ids", (None, None), "batch, length")
    batch_size, length = _shape(batch, "input_ids")
    if "position_ids" in batch:
      _expect(batch, "position_ids", (batch_size, length), "same as input_ids")
      _expect_integer(batch, "position_ids")
    if cache_mode == "step" and ("position_ids" not in batch or length != 1):
      raise ValueError(f"batch['input_ids']: cache_mode 'step' expects one token per example "
                       f"([batch, 1]) with 'position_ids', found shape {[batch_size, length]} and "
                       f"fields {sorted(batch)}")
    if "position_ids" not in batch:
      max_length = config.max_position_embeddings - config.pad_token_id - 1
      if length > max_length:
        raise ValueError(
            f"batch['input_ids']: expected length <= {max_length} (max_position_embeddings "
            f"{config.max_position_embeddings} minus the position offset {config.pad_token_id + 1}), "
            f"found shape {[batch_size, length]}")
    for name in ("role_ids", "turn_ids"):
      if name in batch:
        _expect(batch, name, (batch_size, length), "same as input_ids")
        _expect_integer(batch, name)
    if "text_delta" in batch:
      _expect(batch, "text_delta", (batch_size, length, config.hidden_size),
              f"batch, length, hidden_size={config.hidden_size}")
    if "target_mask" in batch:
      _expect(batch, "target_mask", (batch_size, length), "same as input_ids")
    if "lm_positions" in batch:
      _expect(batch, "lm_positions", (batch_size, None), "batch, predicted positions")
      _expect_integer(batch, "lm_positions")
  if mask_kind in ("seq2seq", "caption") and "target_mask" not in batch:
    raise ValueError(f"batch['target_mask']: required for mask_kind {mask_kind!r}, found fields "
                     f"{sorted(batch)}")
  if mask_kind == "caption" and not has_image(batch):
    raise ValueError("mask_kind 'caption' needs an image ('region_features' or 'pixels'), found "
                     f"fields {sorted(batch)}")
  if config.image_input == "regions":
    if "pixels" in batch:
      raise ValueError("batch['pixels']: model.image_input is 'regions', expected "
                       "'region_features', 'region_locations' and 'region_mask'")
    if "region_features" in batch:
      for name in REGION_FIELDS:
        if name not in batch:
          raise ValueError(f"batch[{name!r}]: missing; an image needs all of {REGION_FIELDS}")
      features = _shape(batch, "region_features")
      _expect(batch, "region_features", (batch_size, None, config.region_feature_dim),
              f"batch, regions, region_feature_dim={config.region_feature_dim}")
      batch_size, regions = features[0], features[1]
      _expect(batch, "region_locations", (batch_size, regions, 5),
              "batch, regions, [x1/W, y1/H, x2/W, y2/H, area]")
      _expect(batch, "region_mask", (batch_size, regions), "batch, regions")
      if "region_delta" in batch:
        _expect(batch, "region_delta", (batch_size, regions + 1, config.region_feature_dim),
                "batch, 1 + regions ([IMG] slot first), region_feature_dim")
  elif config.image_input == "pixels":
    if "region_features" in batch:
      raise ValueError("batch['region_features']: model.image_input is 'pixels', expected 'pixels'")
    if "pixels" in batch:
      s, ch = config.image_size, config.image_channels
      _expect(batch, "pixels", (batch_size, s, s, ch), "batch, image_size, image_size, channels")
      if s % config.patch_size:
        raise ValueError(f"model.image_size {s} is not a multiple of model.patch_size "
                         f"{config.patch_size}")
  else:
    raise ValueError(f"model.image_input: expected 'regions' or 'pixels', found "
                     f"{config.image_input!r}")
