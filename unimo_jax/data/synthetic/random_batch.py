"""Random batches in the model's format: shapes and masks right, content meaningless.

For smoke runs, benchmarks and tests; real data comes from the data pipeline.
"""

import numpy as np


def random_text(config, rng, batch=2, length=10, lengths=None):
  """input_ids [batch, length]: [CLS]=0, random tokens, [SEP]=2 at each length, then [PAD]."""
  ids = rng.integers(4, config.vocab_size, size=(batch, length)).astype(np.int32)
  ids[:, 0] = 0
  lengths = [length] * batch if lengths is None else lengths
  for row, n in enumerate(lengths):
    ids[row, n - 1] = 2
    ids[row, n:] = config.pad_token_id
  return ids


def random_regions(config, rng, batch=2, regions=5, counts=None):
  """region_features / region_locations / region_mask with `counts` real boxes per image."""
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


def _lm_targets(config, rng, ids, positions_per_row):
  """lm_positions / lm_labels / lm_weights at random real positions of `ids`."""
  batch, length = ids.shape
  positions = np.stack([rng.choice(np.arange(1, length - 1), positions_per_row, replace=False)
                        for _ in range(batch)]).astype(np.int32)
  labels = np.take_along_axis(ids, positions, 1)
  return {"lm_positions": positions, "lm_labels": labels,
          "lm_weights": np.ones(positions.shape, np.float32)}


def _mrm_targets(config, rng, image, ratio=0.15):
  regions = image["region_features"]
  mask = (rng.uniform(size=regions.shape[:2]) < ratio) & image["region_mask"]
  mask[:, 0] |= image["region_mask"][:, 0]  # at least one masked region per image
  logits = rng.normal(size=regions.shape[:2] + (config.num_region_classes,))
  soft = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  masked = np.where(mask[..., None], 0.0, regions).astype(np.float32)
  return dict(image, region_features=masked, mrm_mask=mask, region_target_features=regions,
              region_soft_labels=soft.astype(np.float32))


def random_pretraining_batch(config, seed: int = 0) -> dict:
  """One mixed pretraining batch with every sub-batch the loss knows (see objectives/pretraining_loss.py).

  Sizes come from config.batch (text / image / pair examples) and config.data (lengths, regions,
  CMCL extras).
  """
  m, b, d = config.model, config.batch, config.data
  extra_texts = d.cmcl_extra_positives + d.cmcl_hard_negatives
  rng = np.random.default_rng(seed)
  lm_count = max(1, int(round(0.15 * d.max_text_length)))
  text_ids = random_text(m, rng, b.text, d.max_text_length)
  seq_ids = random_text(m, rng, b.text, d.max_text_length)
  target = np.zeros(seq_ids.shape, bool)
  target[:, d.max_text_length * 3 // 4:] = True
  pair_ids = random_text(m, rng, b.pair, d.max_caption_length)
  caption_target = np.zeros(pair_ids.shape, bool)
  caption_target[:, 1:] = True
  pair_image = random_regions(m, rng, b.pair, d.max_regions)
  extra_text = random_text(m, rng, b.pair * extra_texts, d.max_caption_length)
  extra_image = random_regions(m, rng, b.pair * d.cmcl_extra_images, d.max_regions)
  return {
      "text_mlm": dict(input_ids=text_ids, **_lm_targets(m, rng, text_ids, lm_count)),
      "text_seq2seq": dict(input_ids=seq_ids, target_mask=target,
                           **_lm_targets(m, rng, seq_ids, lm_count)),
      "image_mrm": _mrm_targets(m, rng, random_regions(m, rng, b.image, d.max_regions)),
      "pair_mlm": dict(pair_image, input_ids=pair_ids, **_lm_targets(m, rng, pair_ids, lm_count)),
      "pair_mrm": dict(_mrm_targets(m, rng, pair_image), input_ids=pair_ids),
      "pair_caption": dict(pair_image, input_ids=pair_ids, target_mask=caption_target,
                           **_lm_targets(m, rng, pair_ids, lm_count)),
      "cmcl": {
          "image": pair_image,
          "text": {"input_ids": pair_ids},
          "extra_text": {"input_ids": extra_text.reshape(b.pair, extra_texts, -1)},
          "extra_text_positive": rng.uniform(size=(b.pair, extra_texts)) < 0.5,
          "extra_text_valid": rng.uniform(size=(b.pair, extra_texts)) < 0.8,
          "extra_image": {k: v.reshape((b.pair, d.cmcl_extra_images) + v.shape[1:])
                          for k, v in extra_image.items()},
          "extra_image_valid": rng.uniform(size=(b.pair, d.cmcl_extra_images)) < 0.8,
      },
  }
