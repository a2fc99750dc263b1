"""A small inference API for notebooks and scripts.

  from unimo_jax.inference import Pipeline
  pipe = Pipeline.load("/tmp/unimo_tiny")            # a pretraining or fine-tuning workdir
  pipe.caption([image])                              # -> ["a small red square is left of ..."]
  pipe.rank_captions(image, ["a red square", ...])   # -> [(caption, score)], best first
  pipe.rank_images("a red square", [image, ...])     # -> [(index, score)], best first
  Pipeline.load("/tmp/vqa").answer(image, "what colour is the small square ?")  # -> ("red", 0.98)

An image is a dict like a shard record: region_features [N, D] with boxes [N, 4] (x1, y1, x2, y2
pixels), image_w and image_h; or pixels [H, W, 3] uint8 for a pixel-input model. Ranking uses the
fine-tuned match head when the workdir is a retrieval fine-tune, else the CMCL embeddings.
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from unimo_jax.data import examples
from unimo_jax.data.pipeline import Transforms
from unimo_jax.data.tokenizers import load_tokenizer
from unimo_jax.decode import DecodeSettings, strip_sequence
from unimo_jax.generate import jitted_generate
from unimo_jax.model import Unimo
from unimo_jax.paths import as_path


def task_head(config, tokenizer, answers=None):
  """The head module of config.task (VQA: over `answers`), built as the task builds it."""
  import tempfile
  from unimo_jax.tasks.registry import make_task
  from unimo_jax.tasks.vqa import ANSWERS_FILE
  with tempfile.TemporaryDirectory() as scratch:  # the task reads its answers from its workdir
    if answers is not None:
      (pathlib.Path(scratch) / ANSWERS_FILE).write_text(json.dumps(answers))
    return make_task(config, tokenizer, scratch).head()


def _latest_params(workdir):
  import orbax.checkpoint as ocp
  root = workdir / "checkpoints"
  steps = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.is_dir() else []
  if not steps:
    raise FileNotFoundError(f"{workdir}: expected checkpoints/<step>/state, found no checkpoint")
  return ocp.StandardCheckpointer().restore(root / str(steps[-1]) / "state")["params"]


class Pipeline:

  def __init__(self, config, params, tokenizer, answers=None):
    self.config = config
    self.tokenizer = tokenizer
    self.special = tokenizer.special_ids
    self.model = Unimo(config.model)
    self.task = config.task.name if "task" in config else None
    self.params = params if self.task else {"backbone": params, "head": {}}
    self.answers = answers
    meta = {"region_feature_dim": config.model.region_feature_dim,
            "num_classes": config.model.get("num_region_classes", 1)}
    self.transforms = Transforms(config.data, self.special, tokenizer.vocab_size, meta)
    self._generate = {}
    self._head = None
    if self.task in ("retrieval", "vqa"):
      self._head = task_head(config, tokenizer, answers)
    self._embed = jax.jit(lambda p, b, key: self.model.apply({"params": p}, b,
                                                             heads={"contrastive"})[key],
                          static_argnums=2)
    self._joint = jax.jit(lambda p, b: self._head.apply(
        {"params": p["head"]}, self.model.apply({"params": p["backbone"]}, b, heads=frozenset())))

  @classmethod
  def load(cls, workdir, tokenizer=None):
    """From a workdir written by `python -m unimo_jax.main` (its config.json, latest checkpoint,
    and answers.json for VQA). `tokenizer` overrides config.data.tokenizer."""
    workdir = as_path(workdir)
    config_file = workdir / "config.json"
    if not config_file.exists():
      raise FileNotFoundError(f"{workdir}: expected config.json (written by unimo_jax.main)")
    config = ml_collections.ConfigDict(json.loads(config_file.read_text()))
    tok = load_tokenizer(tokenizer or config.data.tokenizer)
    answers = None
    if (workdir / "answers.json").exists():
      answers = json.loads((workdir / "answers.json").read_text())
    return cls(config, _latest_params(workdir), tok, answers)

  # ---- inputs --------------------------------------------------------------------------------
  def image_inputs(self, images) -> dict:
    """Stacked model image fields for a list of images."""
    rows = []
    for i, image in enumerate(images):
      if "region_features" in image and len(np.asarray(image["region_features"])) == 0:
        raise ValueError(f"image {i}: expected at least one region feature, found none")
      rows.append(self.transforms.model_image_inputs(image))
    return jax.tree.map(lambda *xs: np.stack(xs), *rows)

  def text_inputs(self, texts) -> np.ndarray:
    length = self.config.data.max_caption_length
    ids = self.tokenizer.encode_batch(list(texts))
    return np.stack([examples.text_sequence(t, length, self.special)[0] for t in ids])

  # ---- tasks ---------------------------------------------------------------------------------
  def caption(self, images, settings: DecodeSettings | None = None) -> list:
    """Generated captions (beam search by default: config.decode, or beam 5, alpha 0.6)."""
    if settings is None:
      fields = dict(self.config.get("decode", {})) or dict(beam_size=5, alpha=0.6, max_length=20)
      settings = DecodeSettings.from_config(fields)
    if settings not in self._generate:
      s = self.special
      self._generate[settings] = jitted_generate(
          self.model, settings, bos_id=s["cls"], eos_id=s["sep"], pad_id=s["pad"],
          valid_vocab=self.tokenizer.vocab_size)
    source = self.image_inputs(images)
    if self.task == "caption" and self.config.task.get("object_tags"):
      from unimo_jax.tasks.caption import tag_block
      missing = [i for i, image in enumerate(images) if "tag_ids" not in image]
      if missing:
        raise ValueError(f"caption: this model reads object tags; images {missing} have no "
                         "'tag_ids'")
      tags = [tag_block(image["tag_ids"], self.config.data.max_tags, self.special["pad"])
              for image in images]
      source.update(jax.tree.map(lambda *xs: np.stack(xs), *tags))
    out = self._generate[settings](self.params["backbone"], source, jax.random.key(0))
    seqs = np.asarray(out["sequences"])
    seqs = seqs[:, 0] if seqs.ndim == 3 else seqs
    return [self.tokenizer.decode(strip_sequence(s, self.special["sep"], self.special["pad"]))
            for s in seqs]

  def scores(self, images, texts) -> np.ndarray:
    """[images, texts] scores: the match head of a retrieval fine-tune, else CMCL cosine."""
    image_inputs, text_ids = self.image_inputs(images), self.text_inputs(texts)
    if self.task == "retrieval":
      n_i, n_t = len(images), len(texts)
      batch = jax.tree.map(lambda x: np.repeat(x, n_t, axis=0), image_inputs)
      batch["input_ids"] = np.tile(text_ids, (n_i, 1))
      return np.asarray(self._joint(self.params, batch)).reshape(n_i, n_t)
    image_emb = self._embed(self.params["backbone"], image_inputs, "image_embedding")
    text_emb = self._embed(self.params["backbone"], {"input_ids": text_ids}, "text_embedding")
    return np.asarray(image_emb @ text_emb.T)

  def rank_captions(self, image, captions) -> list:
    scores = self.scores([image], captions)[0]
    return [(captions[i], float(scores[i])) for i in np.argsort(-scores, kind="stable")]

  def rank_images(self, caption, images) -> list:
    scores = self.scores(images, [caption])[:, 0]
    return [(int(i), float(scores[i])) for i in np.argsort(-scores, kind="stable")]

  def answer(self, image, question) -> tuple:
    """(answer, sigmoid probability) from a VQA fine-tune."""
    if self.task != "vqa" or not self.answers:
      raise ValueError(f"answer: expected a VQA workdir (task 'vqa' with answers.json), found "
                       f"task {self.task!r}")
    batch = dict(self.image_inputs([image]), input_ids=self.text_inputs([question]))
    logits = np.asarray(self._joint(self.params, batch))[0]
    best = int(np.argmax(logits))
    return self.answers[best], float(jax.nn.sigmoid(jnp.asarray(logits[best])))
