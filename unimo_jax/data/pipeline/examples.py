"""Decoded shard records -> fixed-shape, model-ready fields for every pretraining term.

Every function here is pure numpy and takes its randomness from a Generator, so a grain
`random_map` gives the same example for the same (seed, index). Field names match the model batch
(unimo_jax/model/input_checks.py) and the objectives' labels (unimo_jax/objectives/).

`cfg` is the data config (see `data_config()`); `special` holds the tokenizer's special ids.
"""

import math

import ml_collections
import numpy as np

from unimo_jax.data.formats import images
from unimo_jax.data.pipeline.masking import region_mask, seq2seq_split, span_mask


def data_config() -> ml_collections.ConfigDict:
  """Defaults for the data pipeline (UNIMO's values where the paper gives them)."""
  c = ml_collections.ConfigDict()
  c.text_dir = ""
  c.image_dir = ""
  c.pair_dir = ""
  # Any dataset directory may instead be tfds:<name>[/<config>][:<version>][@<split>]
  # (data/formats/tfds_source.py): prepared (array_record) in tfds_data_dir ('' = tfds's default), its
  # features renamed to ours by tfds_features 'ours=theirs,...' (e.g. 'caption=captions/text').
  c.tfds_data_dir = ""
  c.tfds_features = ""
  c.tokenizer = ""  # a sentencepiece .model or a BPE directory; '' = the synthetic scenes' vocab
  c.max_text_length = 128  # text examples, [CLS] ... [SEP] included
  c.max_caption_length = 40  # pair captions, [CLS] ... [SEP] included
  c.max_regions = 100
  c.image_input = "regions"  # 'regions' or 'pixels' (as model.image_input); pixels drop MRM
  # A detector checkpoint (python -m unimo_jax.convert detector): with it, the inference API
  # (unimo_jax/inference.py) takes image files and pixels for a region-mode model.
  c.detector = ""
  c.max_predictions = 20  # MLM positions per sequence
  c.mask_ratio = 0.15
  c.geometric_p = 0.2
  c.max_span = 10
  c.seq2seq_ratio = 0.25
  c.seq2seq_max_span = 5
  c.region_mask_ratio = 0.15
  c.overlap_ratio = 0.4
  c.cmcl_extra_positives = 2  # paraphrases / retrieved texts per pair
  c.cmcl_hard_negatives = 2  # rewritten / TF-IDF-nearest captions per pair
  c.cmcl_extra_images = 1  # retrieved images per pair
  # Hard-negative images (NegCLIP): > 0 builds the pair batch two by two, each pair followed by
  # one of its twin_pairs (a record whose caption is a hard negative of it: the synthetic twin
  # scenes, or nearest images found offline) with this probability, else by a random pair.
  c.cmcl_twin_fraction = 0.0
  c.seed = 0
  # Input workers: processes that build whole host batches (-1: from the host's cores, see
  # host_batches.default_workers; 0: in this process). Each reads with num_threads threads
  # and keeps `prefetch` batches ready.
  c.workers = -1
  c.num_threads = 2
  c.prefetch = 2
  c.skip_bad_records = False  # True: count and log bad records instead of failing
  return c


def max_target_length(cfg) -> int:
  """Target block of a text seq2seq example: [CLS] + the sampled spans + the [MASK] end token.
  The spans cover ceil(ratio * n) tokens and the last may overshoot by max_span - 1, so every
  target fits whole with its end token."""
  spans = int(math.ceil(cfg.seq2seq_ratio * (cfg.max_text_length - 2))) + cfg.seq2seq_max_span - 1
  return spans + 2


def _pad(values, length, fill, dtype=np.int32):
  out = np.full((length,) + np.shape(values)[1:], fill, dtype)
  values = np.asarray(values)[:length]
  out[:len(values)] = values
  return out


def text_sequence(ids, length, special):
  """[CLS] ids [SEP] truncated and padded to `length`, and which positions are maskable."""
  ids = np.asarray(ids, np.int32)[:length - 2]
  seq = np.concatenate([[special["cls"]], ids, [special["sep"]]]).astype(np.int32)
  maskable = np.zeros(length, bool)
  maskable[1:len(seq) - 1] = True
  return _pad(seq, length, special["pad"]), maskable


def random_token_range(special, vocab_size) -> tuple:
  """[low, high) of ordinary tokens for random replacement: above the leading specials
  ([CLS] [PAD] [SEP] [UNK], and [MASK] when it follows them) and below a trailing [MASK]."""
  low = 1 + max(v for v in special.values() if v < 8)
  high = special["mask"] if special["mask"] > low else vocab_size
  return low, high


def mlm_fields(ids, length, cfg, special, vocab_size, rng) -> dict:
  """Span-masked [CLS] text [SEP] with lm_positions / lm_labels / lm_weights."""
  seq, maskable = text_sequence(ids, length, special)
  low, high = random_token_range(special, vocab_size)
  masked, positions, labels = span_mask(
      seq, maskable, rng, mask_id=special["mask"], vocab_size=high, ratio=cfg.mask_ratio,
      geometric_p=cfg.geometric_p, max_span=cfg.max_span, random_low=low)
  p = cfg.max_predictions
  return {
      "input_ids": masked,
      "lm_positions": _pad(positions, p, 0),
      "lm_labels": _pad(labels, p, special["pad"]),
      "lm_weights": _pad(np.ones(len(positions)), p, 0.0, np.float32),
  }


def target_block(target, length, special):
  """Target inputs [CLS] t1..tk and labels t1..tk [SEP], padded to `length`."""
  target = np.asarray(target, np.int32)[:length - 1]
  inputs = np.concatenate([[special["cls"]], target]).astype(np.int32)
  labels = np.concatenate([target, [special["sep"]]]).astype(np.int32)
  return (_pad(inputs, length, special["pad"]), _pad(labels, length, special["pad"]),
          _pad(np.ones(len(labels)), length, 0.0, np.float32))


def seq2seq_target_block(target, length, special):
  """A text seq2seq target as UNIMO's seq2seq reader builds it (src/reader/seq2seq_reader.py):
  t1..tk [SEP] cut to `length` - 1 tokens, a final [SEP] replaced by [MASK] ("we use [MASK]
  token as the end token"), behind [CLS]. Returns inputs [CLS] t1..tk [MASK] and labels
  t1..tk [MASK] (padded to `length`) with their weights; a target cut short has no end token."""
  seq = (list(np.asarray(target, np.int64)) + [special["sep"]])[:length - 1]
  if seq[-1] == special["sep"]:
    seq[-1] = special["mask"]
  inputs = np.asarray([special["cls"], *seq], np.int32)
  return (_pad(inputs, length, special["pad"]), _pad(seq, length, special["pad"]),
          _pad(np.ones(len(seq)), length, 0.0, np.float32))


def block_positions(ids, pad_id):
  """RoBERTa positions counting from 2 within a block, pads at pad_id."""
  real = ids != pad_id
  return np.where(real, np.cumsum(real) + 1, pad_id).astype(np.int32)


def seq2seq_fields(ids, cfg, special, rng) -> dict:
  """Source [CLS] S [SEP] then target [CLS] T [MASK] (the end token of UNIMO's text seq2seq,
  see seq2seq_target_block); positions restart at 2 in the target."""
  ids = np.asarray(ids, np.int32)[:cfg.max_text_length - 2]
  if len(ids) < 2:
    ids = np.concatenate([ids, [special["unk"]] * (2 - len(ids))]).astype(np.int32)
  source, target = seq2seq_split(ids, rng, ratio=cfg.seq2seq_ratio, max_span=cfg.seq2seq_max_span)
  src, _ = text_sequence(source, cfg.max_text_length, special)
  tgt_len = max_target_length(cfg)
  tgt_in, labels, weights = seq2seq_target_block(target, tgt_len, special)
  input_ids = np.concatenate([src, tgt_in])
  return {
      "input_ids": input_ids,
      "position_ids": np.concatenate([block_positions(src, special["pad"]),
                                      block_positions(tgt_in, special["pad"])]),
      "target_mask": np.arange(len(input_ids)) >= len(src),
      "lm_positions": np.arange(len(src), len(input_ids), dtype=np.int32),
      "lm_labels": labels,
      "lm_weights": weights,
  }


def region_fields(record, cfg, feature_dim, num_classes) -> dict:
  """Regions padded to cfg.max_regions: features, 5-d locations, mask, soft labels, boxes."""
  n_max = cfg.max_regions
  features = np.asarray(record["region_features"])[:n_max]
  boxes = np.asarray(record["boxes"], np.float32)[:n_max]
  w, h = float(record["image_w"]), float(record["image_h"])
  area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (w * h)
  loc = np.stack([boxes[:, 0] / w, boxes[:, 1] / h, boxes[:, 2] / w, boxes[:, 3] / h, area], -1)
  probs = record.get("class_probs")
  if probs is None:
    probs = np.zeros((len(features), num_classes), np.float32)
  return {
      "region_features": _pad(features, n_max, 0, features.dtype).reshape(n_max, feature_dim),
      "region_locations": _pad(loc, n_max, 0, np.float32).reshape(n_max, 5),
      "region_mask": _pad(np.ones(len(features), bool), n_max, False, bool),
      "_boxes": _pad(boxes, n_max, 0, np.float32).reshape(n_max, 4),
      "_soft_labels": _pad(np.asarray(probs)[:n_max], n_max, 0, np.asarray(probs).dtype).reshape(
          n_max, num_classes),
  }


def mrm_fields(regions, cfg, rng) -> dict:
  """Masked-region fields from region_fields output: masked features zeroed, targets kept."""
  mask = region_mask(regions["_boxes"], regions["region_mask"], rng, ratio=cfg.region_mask_ratio,
                     overlap_ratio=cfg.overlap_ratio)
  features = regions["region_features"]
  return {
      "region_features": np.where(mask[:, None], 0, features).astype(features.dtype),
      "region_locations": regions["region_locations"],
      "region_mask": regions["region_mask"],
      "mrm_mask": mask,
      "region_target_features": features,
      "region_soft_labels": regions["_soft_labels"],
  }


def image_inputs(regions) -> dict:
  return {k: v for k, v in regions.items() if not k.startswith("_")}


def pixel_fields(record, where="record", size=None, rng=None) -> dict:
  """pixels [size, size, 3] float32 in [0, 1] of a record's image: its `pixels` array (uint8
  [H, W, 3]; resized when `size` differs), or an image file, encoded in `image_bytes` or named by
  `image_file`, decoded and cropped to `size` (data/formats/images.py: a random resized crop with `rng`,
  training; the centre crop without, evaluation)."""
  def cropped(image):
    return images.train_crop(image, size, rng) if rng is not None else images.eval_crop(image, size)

  if "pixels" in record:
    pixels = np.asarray(record["pixels"], np.uint8)
    if size is not None and pixels.shape[:2] != (size, size):
      pixels = cropped(pixels)
  elif "image_bytes" in record or "image_file" in record:
    if size is None:
      raise ValueError(f"{where}: an image file needs the model's image size to be cropped to")
    name = f"{where} (image {record.get('image_id', '?')})"
    if "image_bytes" in record:
      pixels = cropped(images.decode_image(bytes(record["image_bytes"]), name))
    else:
      pixels = cropped(images.read_image(record["image_file"], name))
  else:
    raise ValueError(f"{where}: data.image_input is 'pixels' but the record has no 'pixels', "
                     f"'image_bytes' or 'image_file' (found {sorted(record)})")
  return {"pixels": pixels.astype(np.float32) / 255.0}


def caption_fields(caption, cfg, special) -> dict:
  """Image-to-text seq2seq: the caption block [CLS] c1..ck is the target (caption mask)."""
  inputs, labels, weights = target_block(caption, cfg.max_caption_length, special)
  return {
      "input_ids": inputs,
      "position_ids": block_positions(inputs, special["pad"]),
      "target_mask": np.ones(len(inputs), bool),
      "lm_positions": np.arange(len(inputs), dtype=np.int32),
      "lm_labels": labels,
      "lm_weights": weights,
  }


def extra_text_fields(positives, negatives, cfg, special, rng) -> dict:
  """CMCL extra texts: cfg.cmcl_extra_positives positive slots then cfg.cmcl_hard_negatives
  negative slots, each [CLS] text [SEP]; absent extras are padding with valid=False."""
  slots = []
  for pool, count, positive in ((positives, cfg.cmcl_extra_positives, True),
                                (negatives, cfg.cmcl_hard_negatives, False)):
    pool = list(pool)
    order = rng.permutation(len(pool))[:count]
    chosen = [pool[i] for i in order]
    slots += [(ids, positive, True) for ids in chosen]
    slots += [(np.zeros(0, np.int32), positive, False)] * (count - len(chosen))
  ids = np.stack([text_sequence(t, cfg.max_caption_length, special)[0] for t, _, _ in slots])
  return {
      "input_ids": ids,
      "positive": np.array([p for _, p, _ in slots], bool),
      "valid": np.array([v for _, _, v in slots], bool),
  }
