"""A small inference API for notebooks and scripts.

  from unimo_jax.inference import Pipeline
  pipe = Pipeline.load("/tmp/unimo_tiny")            # a pretraining or fine-tuning workdir
  pipe.caption([image])                              # -> ["a small red square is left of ..."]
  pipe.rank_captions(image, ["a red square", ...])   # -> [(caption, score)], best first
  pipe.rank_images("a red square", [image, ...])     # -> [(index, score)], best first
  Pipeline.load("/tmp/vqa").answer(image, "what colour is the small square ?")  # -> ("red", 0.98)

An image is a dict like a shard record: region_features [N, D] with boxes [N, 4] (x1, y1, x2, y2
pixels), image_w and image_h; or pixels [H, W, 3] uint8 given as the array itself, or an image
file's path. A pixel-input model centre-crops them as evaluation does; a region-input model runs
them through the detector its config names (data.detector, or Pipeline.load(..., detector=DIR):
a checkpoint written by `python -m unimo_jax.convert detector`). caption
takes one image (and returns its caption) or a list of them. Ranking uses the
fine-tuned match head when the workdir is a retrieval fine-tune, else the CMCL embeddings.
Inputs are prepared, checked and scored by the workdir's task (unimo_jax/tasks/), so they are the
ones its evaluation used.
"""

import functools
import json
import pathlib

import jax
import ml_collections
import numpy as np

from unimo_jax.data.pipeline.batching import stack_rows
from unimo_jax.data.formats.tokenizers import load_tokenizer
from unimo_jax.decoding.generate import jitted_generate
from unimo_jax.decoding.search import DecodeSettings, strip_sequence
from unimo_jax.paths import as_path
from unimo_jax.tasks.base import Task
from unimo_jax.tasks.registry import make_task
from unimo_jax.train.checkpoint import read_params
from unimo_jax.train.workdir import CONFIG_FILE, read_data_paths


class Pipeline:

  def __init__(self, task, params):
    """task: the workdir's Task (the base Task for a pretraining workdir); params: its
    {'backbone', 'head'} parameters."""
    self.task, self.params = task, params
    self.config, self.tokenizer, self.special = task.config, task.tokenizer, task.special
    self.name = self.config.task.name if "task" in self.config else None
    self._generate = {}

  @classmethod
  def load(cls, workdir, tokenizer=None, detector=None):
    """From a workdir written by `python -m unimo_jax.main` (its config.json, data_paths.json,
    latest checkpoint, and answers.json for VQA). `tokenizer` (a path) overrides the run's;
    `detector` (a detector checkpoint) sets data.detector."""
    workdir = as_path(workdir)
    config_file = workdir / CONFIG_FILE
    if not config_file.exists():
      raise FileNotFoundError(f"{workdir}: expected config.json (written by unimo_jax.main)")
    config = ml_collections.ConfigDict(json.loads(config_file.read_text()))
    if detector:
      with config.unlocked():
        config.data.detector = str(detector)
    paths = read_data_paths(workdir) or {"tokenizer": config.data.tokenizer}
    tok = load_tokenizer(tokenizer or paths["tokenizer"])
    params = read_params(workdir)
    if "task" not in config:  # pretraining: the backbone alone
      return cls(Task(config, workdir, data_paths=paths, tokenizer=tok),
                 {"backbone": params, "head": {}})
    return cls(make_task(config, workdir, data_paths=paths, tokenizer=tok), params)

  # ---- inputs --------------------------------------------------------------------------------
  def image_record(self, image, where: str) -> dict:
    """A record from an image as given: a record (dict) as is; pixels [H, W, 3] or an image
    file's path for a pixel-input model."""
    if isinstance(image, dict):
      return image
    pixels = self.config.model.get("image_input", "regions") == "pixels"
    if isinstance(image, (str, pathlib.PurePath)) or isinstance(image, np.ndarray):
      if isinstance(image, np.ndarray) and (image.ndim != 3 or image.shape[-1] != 3):
        raise ValueError(f"{where}: expected pixels [height, width, 3], found shape "
                         f"{list(image.shape)}")
      if not pixels:
        return self._detected_regions(image, where)
      if isinstance(image, np.ndarray):
        return {"pixels": np.asarray(image, np.uint8)}
      return {"image_file": str(image)}
    raise ValueError(f"{where}: expected a record (dict), pixels [H, W, 3] or an image file's "
                     f"path, found {type(image).__name__}")

  @functools.cached_property
  def _extractor(self):
    from unimo_jax.detector.extractor import Extractor
    extractor = Extractor.load(self.config.data.detector)
    expected = self.config.model.get("region_feature_dim")
    if expected and extractor.config.feature_dim != expected:
      raise ValueError(f"data.detector {self.config.data.detector}: its regions have "
                       f"{extractor.config.feature_dim}-d features, this model reads "
                       f"{expected}-d (model.region_feature_dim)")
    return extractor

  def _detected_regions(self, image, where) -> dict:
    """A region record of pixels or an image file, through the configured detector."""
    if not self.config.data.get("detector"):
      raise ValueError(f"{where}: this model reads detector region features "
                       "(model.image_input='regions'): expected a record with region_features, "
                       "boxes, image_w and image_h, or a detector (data.detector, or "
                       f"Pipeline.load(..., detector=DIR)) for image files; found "
                       f"{type(image).__name__}")
    from unimo_jax.data.formats.images import read_image
    pixels = np.asarray(image, np.uint8) if isinstance(image, np.ndarray) else read_image(
        image, where)
    regions = self._extractor([pixels])[0]  # already a record's fields
    return {k: v for k, v in regions.items() if k != "attr_probs"}

  def image_rows(self, images) -> list:
    """Model fields of each image; a captioning task with object tags adds each image's tags."""
    source = getattr(self.task, "source_inputs", self.task.image_inputs)
    return [source(self.image_record(image, f"image {i}"), f"image {i}")
            for i, image in enumerate(images)]

  def text_rows(self, texts) -> list:
    length = self.config.data.max_caption_length
    return [self.task.text_ids(ids, length) for ids in self.tokenizer.encode_batch(list(texts))]

  # ---- tasks ---------------------------------------------------------------------------------
  def caption(self, images, settings: DecodeSettings | None = None):
    """Generated captions (beam search by default: config.decode, or beam 5, alpha 0.6): one
    for one image, a list for a list."""
    if _is_one_image(images):
      return self.caption([images], settings)[0]
    if settings is None:
      fields = dict(self.config.get("decode", {})) or dict(beam_size=5, alpha=0.6, max_length=20)
      settings = DecodeSettings.from_config(fields)
    if settings not in self._generate:
      s = self.special
      self._generate[settings] = jitted_generate(
          self.task.model, settings, bos_id=s["cls"], eos_id=s["sep"], pad_id=s["pad"],
          valid_vocab=self.tokenizer.vocab_size)
    source = stack_rows(self.image_rows(images))
    out = self._generate[settings](self.params["backbone"], source, jax.random.key(0))
    seqs = np.asarray(out["sequences"])
    seqs = seqs[:, 0] if seqs.ndim == 3 else seqs
    return [self.tokenizer.decode(strip_sequence(s, self.special["sep"], self.special["pad"]))
            for s in seqs]

  def scores(self, images, texts) -> np.ndarray:
    """[images, texts] scores: the match head of a retrieval fine-tune, else CMCL cosine."""
    image_rows, text_rows = self.image_rows(images), self.text_rows(texts)
    if self.name == "retrieval":
      return self.task.similarity(self.params, image_rows, text_rows)
    return self.task.zero_shot_similarity(self.params, image_rows, text_rows)

  def rank_captions(self, image, captions) -> list:
    scores = self.scores([image], captions)[0]
    return [(captions[i], float(scores[i])) for i in np.argsort(-scores, kind="stable")]

  def rank_images(self, caption, images) -> list:
    scores = self.scores(images, [caption])[:, 0]
    return [(int(i), float(scores[i])) for i in np.argsort(-scores, kind="stable")]

  @functools.cached_property
  def _head_logits(self):
    return jax.jit(lambda p, b: self.task.forward(p, b)[1])

  def answer(self, image, question) -> tuple:
    """(answer, sigmoid probability) from a VQA fine-tune."""
    if self.name != "vqa":
      raise ValueError(f"answer: expected a VQA workdir (task 'vqa' with answers.json), found "
                       f"task {self.name!r}")
    batch = stack_rows([dict(self.image_rows([image])[0], input_ids=self.text_rows([question])[0])])
    logits = np.asarray(self._head_logits(self.params, batch))[0]
    best = int(np.argmax(logits))
    return self.task.answers[best], float(jax.nn.sigmoid(logits[best]))


def _is_one_image(images) -> bool:
  """One image (a record, an array of pixels, a path), not a list of them."""
  return isinstance(images, (dict, str, pathlib.PurePath, np.ndarray))
