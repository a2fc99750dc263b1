"""A record's model inputs: the one builder that the pretraining transforms, the tasks, the
evaluator and the inference API use to turn a shard-like record into the model's fields.

An image is a record's detector regions (region_features [N, D], boxes [N, 4] in pixels, image_w,
image_h, optional class_probs [N, C]) padded to data.max_regions, or its pixels [H, W, 3] uint8
when data.image_input is 'pixels'. Text is [CLS] ids [SEP] padded with [PAD].
The region sizes (D, C) are given explicitly: the model config's for the tasks and the inference
API (`for_model`), an image shard's metadata for the pretraining streams; start-up checks refuse
shards whose metadata disagrees with the model (train/checks.py).
"""

import numpy as np

from unimo_jax.data.pipeline import examples
from unimo_jax.errors import DataError

IMAGE_INPUTS = ("regions", "pixels")


class ModelInputs:
  """Record -> model fields under one data config (picklable: plain attributes only)."""

  def __init__(self, cfg, special: dict, feature_dim: int | None, num_classes: int | None,
               image_size: int | None = None):
    if cfg.image_input not in IMAGE_INPUTS:
      raise ValueError(f"data.image_input: expected one of {IMAGE_INPUTS}, found "
                       f"{cfg.image_input!r}")
    self.cfg, self.special = cfg, special
    self.feature_dim = feature_dim
    self.num_classes = num_classes or 1
    self.pixels = cfg.image_input == "pixels"
    self.image_size = image_size  # pixel mode: image files are cropped to it

  @classmethod
  def for_model(cls, data_cfg, model_cfg, special: dict) -> "ModelInputs":
    """Region sizes from the model config (what its embedding and region heads expect)."""
    return cls(data_cfg, special, model_cfg.region_feature_dim,
               model_cfg.get("num_region_classes", 1), model_cfg.get("image_size"))

  def regions(self, record) -> dict:
    """Padded regions with the private '_boxes' / '_soft_labels' that masking and MRM read."""
    return examples.region_fields(record, self.cfg, self.feature_dim, self.num_classes)

  def image(self, record, where: str | None = None, rng=None) -> dict:
    """The model's image fields: pixels [H, W, 3] in [0, 1] (an image file decoded and cropped:
    randomly with `rng`, training; centred without), or region_features [R, D],
    region_locations [R, 5] and region_mask [R]. With `where` (a name for errors), an image with
    no regions is a DataError: there is nothing to see."""
    if self.pixels:
      return examples.pixel_fields(record, where or "record", self.image_size, rng)
    if where is not None and len(np.asarray(record.get("region_features", ()))) == 0:
      raise DataError(f"{where}: image {record.get('image_id', '?')!r} has no region features; "
                      "expected at least one box")
    return examples.image_inputs(self.regions(record))

  def text(self, ids, length: int | None = None) -> np.ndarray:
    """[CLS] ids [SEP] padded to `length` (default data.max_caption_length): input_ids [length]."""
    length = int(length or self.cfg.max_caption_length)
    return examples.text_sequence(ids, length, self.special)[0]

  def pair(self, record, where: str | None = None, rng=None) -> dict:
    """The image with its text (caption_ids): [IMG] v.. [CLS] w.. [SEP]."""
    return dict(self.image(record, where, rng), input_ids=self.text(record["caption_ids"]))
