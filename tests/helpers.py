"""Small random batches for tests (text, regions, pairs) in the model's batch format."""

import numpy as np


def random_text(config, rng, batch=2, length=10, lengths=None):
  """input_ids [batch, length] starting with [CLS]=0, ending the real part with [SEP]=2, padded."""
  ids = rng.integers(4, config.vocab_size, size=(batch, length)).astype(np.int32)
  ids[:, 0] = 0
  lengths = [length] * batch if lengths is None else lengths
  for row, n in enumerate(lengths):
    ids[row, n - 1] = 2
    ids[row, n:] = config.pad_token_id
  return ids


def random_regions(config, rng, batch=2, regions=5, counts=None):
  counts = [regions] * batch if counts is None else counts
  mask = np.arange(regions)[None] < np.asarray(counts)[:, None]
  x1y1 = rng.uniform(0, 0.5, size=(batch, regions, 2))
  x2y2 = x1y1 + rng.uniform(0.1, 0.5, size=(batch, regions, 2))
  area = np.prod(x2y2 - x1y1, axis=-1, keepdims=True)
  return {
      "region_features": rng.normal(size=(batch, regions, config.region_feature_dim)).astype(np.float32),
      "region_locations": np.concatenate([x1y1, x2y2, area], -1).astype(np.float32),
      "region_mask": mask,
  }
