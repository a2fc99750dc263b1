"""The host side of region extraction: a converted checkpoint, images grouped by size bucket and
batched, one compiled program per bucket.

  extractor = Extractor.load("/ckpt/bua-r101")       # written by `python -m unimo_jax.convert detector`
  regions = extractor(rgb_images)                    # one dict per image, as a shard stores it

Each result holds image_w, image_h (the original size), region_features [n, D] float32, boxes
[n, 4] (x1, y1, x2, y2 in original pixels), class_probs [n, C] (background first) and
attr_probs [n, A], with n between min_boxes and max_boxes (fewer only if the RPN proposed fewer).
"""

import functools
import json
import pathlib

import jax
import numpy as np

from unimo_jax.detector import preprocess
from unimo_jax.detector.config import DetectorConfig
from unimo_jax.detector.network import detect

CONFIG_FILE = "detector_config.json"
PARAMS_DIR = "params"


def save_detector(out_dir, config: DetectorConfig, params) -> None:
  """out_dir/params (a digest-checked params checkpoint) and out_dir/detector_config.json."""
  from unimo_jax.train.checkpoint import save_params
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  save_params(out_dir / PARAMS_DIR, params)
  (out_dir / CONFIG_FILE).write_text(config.to_json())


def load_detector(path):
  """(DetectorConfig, params) of a directory written by save_detector; FileNotFoundError naming
  what is missing, CorruptCheckpoint when the arrays differ from their digests."""
  from unimo_jax.train.checkpoint import read_params
  path = pathlib.Path(path)
  if not (path / CONFIG_FILE).exists() or not (path / PARAMS_DIR).is_dir():
    raise FileNotFoundError(f"{path}: expected a detector checkpoint ({CONFIG_FILE} and "
                            f"{PARAMS_DIR}/, written by `python -m unimo_jax.convert detector`)")
  config = DetectorConfig.from_dict(json.loads((path / CONFIG_FILE).read_text()))
  return config, read_params(path / PARAMS_DIR)


class Extractor:

  def __init__(self, config: DetectorConfig, params, batch_size: int = 1):
    self.config, self.batch_size = config, batch_size
    self.params = jax.device_put(params)
    self._detect = jax.jit(functools.partial(detect, config=config))

  @classmethod
  def load(cls, path, batch_size: int = 1):
    return cls(*load_detector(path), batch_size=batch_size)

  def __call__(self, images) -> list:
    """RGB uint8 [H, W, 3] images -> their regions, in order."""
    prepared = [preprocess.prepare(image, self.config) for image in images]
    buckets = [preprocess.bucket_for(*p.shape[:2], self.config.buckets) for p, _ in prepared]
    results = [None] * len(images)
    for bucket in sorted(set(buckets)):
      members = [i for i, b in enumerate(buckets) if b == bucket]
      for start in range(0, len(members), self.batch_size):
        chunk = members[start:start + self.batch_size]
        for i, regions in zip(chunk, self._run(bucket, [prepared[i] for i in chunk])):
          regions["image_h"], regions["image_w"] = (int(n) for n in images[i].shape[:2])
          results[i] = regions
    return results

  def _run(self, bucket, prepared) -> list:
    filler = [prepared[0]] * (self.batch_size - len(prepared))  # a full batch: one program
    batch = prepared + filler
    pixels = np.stack([preprocess.pad_to(image, bucket) for image, _ in batch])
    sizes = np.array([image.shape[:2] for image, _ in batch], np.int32)
    scales = np.array([scale for _, scale in batch], np.float32)
    out = jax.device_get(self._detect(self.params, pixels, sizes, scales))
    results = []
    for b in range(len(prepared)):
      n = int(out["num_boxes"][b])
      results.append({"region_features": out["features"][b, :n], "boxes": out["boxes"][b, :n],
                      "class_probs": out["class_probs"][b, :n],
                      "attr_probs": out["attr_probs"][b, :n]})
    return results
