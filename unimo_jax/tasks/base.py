"""What every fine-tuning task shares: the record access, the deterministic step-indexed batches,
the forward pass (backbone + head), batched evaluation and the predictions file.

A task subclass says:
  head()                      the linen head (or None: generation tasks use the LM head)
  usable(record) -> bool      whether a training record can train (others are counted, skipped)
  train_example(record, rng)  one training example: {'inputs': model fields, ...labels}
  loss(params, batch, rng)    (loss, metrics) inside the jitted step
  evaluate(params)            (metrics, predictions) on the eval split
  predict(params)             predictions on the predict split (default: the eval split)
"""

import functools
import json

import jax
import numpy as np

from unimo_jax.data import examples
from unimo_jax.data.pipeline import Transforms
from unimo_jax.data.records import DataError, ShardSource
from unimo_jax.model import Unimo
from unimo_jax.batching import batched_apply, contrastive_embedder, stack_rows
from unimo_jax.paths import as_path


class StepBatches:
  """Global batch `step` of an endless shuffled stream over `indices`: epoch e is a permutation
  seeded by (seed, e). A pure function of the step, so a resumed run sees the same batches."""

  def __init__(self, indices, batch_size: int, seed: int):
    self.indices = np.asarray(indices)
    if len(self.indices) == 0:
      raise ValueError("training set: expected at least one usable record, found none")
    self.batch_size, self.seed = int(batch_size), int(seed)
    self._epoch, self._order = None, None

  def _permutation(self, epoch):
    if epoch != self._epoch:
      rng = np.random.default_rng([self.seed, epoch])
      self._epoch, self._order = epoch, self.indices[rng.permutation(len(self.indices))]
    return self._order

  def __call__(self, step: int) -> np.ndarray:
    n = len(self.indices)
    out = []
    for position in range(step * self.batch_size, (step + 1) * self.batch_size):
      out.append(self._permutation(position // n)[position % n])
    return np.asarray(out)


def process_slice(global_indices):
  """This process's contiguous share of a global batch."""
  count, index = jax.process_count(), jax.process_index()
  per = len(global_indices) // count
  return global_indices[index * per:(index + 1) * per]


class Task:
  name = ""
  mask_kind = "bidirectional"

  def __init__(self, config, tokenizer, workdir, mesh=None):
    self.config = config
    self.tokenizer = tokenizer
    self.special = tokenizer.special_ids
    self.workdir = as_path(workdir)
    self.mesh = mesh
    self.model = Unimo(config.model)
    self._sources = {}
    self.skipped = {}

  # ---- data ------------------------------------------------------------------------------------
  def source(self, split):
    """The records of split 'train', 'eval' or 'predict' (config.data.<split>_dir; predict
    defaults to the eval split), read once."""
    if split not in self._sources:
      path = self.config.data.get(f"{split}_dir", "")
      if split == "predict" and not path:
        path = self.config.data.eval_dir
      if not path:
        raise ValueError(f"data.{split}_dir: expected a dataset directory, found ''")
      self._sources[split] = self.read_split(path, split)
    return self._sources[split]

  def read_split(self, path, split):
    """Random-access records of one split: shards by default (text tasks read TSVs)."""
    return ShardSource(path)

  def transforms(self, source):
    return Transforms(self.config.data, self.special, self.tokenizer.vocab_size, source.meta)

  @functools.cached_property
  def train_transforms(self):
    """Record transforms of the training split (its metadata gives the feature sizes)."""
    return self.transforms(self.source("train"))

  def image_inputs(self, record, transforms, where=""):
    """Model image fields of a record; an image with no regions is a DataError (nothing to see)."""
    if "region_features" in record and self.config.data.image_input == "regions":
      if len(np.asarray(record["region_features"])) == 0:
        raise DataError(f"{where or 'record'}: image {record.get('image_id', '?')!r} has no "
                        "region features; expected at least one box")
    return transforms.model_image_inputs(record)

  def text_ids(self, ids, length):
    return examples.text_sequence(ids, length, self.special)[0]

  def pair_inputs(self, record, transforms, where=""):
    """Model fields of a record's image with its text (caption_ids): [IMG] v.. [CLS] w.. [SEP]."""
    return dict(self.image_inputs(record, transforms, where),
                input_ids=self.text_ids(record["caption_ids"], self.config.data.max_caption_length))

  def split_records(self, split, what="example"):
    """The first data.eval_limit records of a split (all when 0); an empty split is an error."""
    source = self.source(split)
    if len(source) == 0:
      raise DataError(f"data.{split}_dir: expected at least one {what}, found an empty split")
    limit = int(self.config.data.eval_limit) or len(source)
    return source, [source[i] for i in range(min(limit, len(source)))]

  def predicted_classes(self, params, split, what="example"):
    """(records, the head's argmax class per record) for a classification head on image + text."""
    source, records = self.split_records(split, what)
    transforms = self.transforms(source)
    rows = [self.pair_inputs(r, transforms, f"{split} record {i}") for i, r in enumerate(records)]
    fn = jax.jit(lambda p, b: jax.numpy.argmax(self.forward(p, b)[1], -1))
    return records, self.batched(fn, params, rows)

  def usable(self, record) -> bool:
    return True

  def train_indices(self, source):
    """Indices of usable training records; the rest are counted in self.skipped."""
    keep = []
    for i in range(len(source)):
      if self.usable(source[i]):
        keep.append(i)
      else:
        self.skipped["train_unusable"] = self.skipped.get("train_unusable", 0) + 1
    return keep

  def make_batches(self, source):
    return StepBatches(self.train_indices(source), self.config.batch_size, self.config.seed)

  def train_batch(self, source, indices, step):
    rows = [self.train_example(source[int(i)], np.random.default_rng(
        [self.config.seed, step, int(i)])) for i in indices]
    return stack_rows(rows)

  # ---- model -----------------------------------------------------------------------------------
  def head(self):
    return None

  def forward(self, params, inputs, rng=None, heads=frozenset(), mask_kind=None):
    """(backbone outputs, head outputs or None); dropout on when `rng` is given."""
    deterministic = rng is None
    rngs = {} if deterministic else {"dropout": rng}
    outputs = self.model.apply({"params": params["backbone"]}, inputs, heads=heads,
                               mask_kind=mask_kind or self.mask_kind,
                               deterministic=deterministic, rngs=rngs)
    head = self.head()
    if head is None:
      return outputs, None
    head_rngs = {} if deterministic else {"dropout": jax.random.fold_in(rng, 1)}
    return outputs, head.apply({"params": params["head"]}, outputs, deterministic=deterministic,
                               rngs=head_rngs)

  def init_head(self, key):
    """Boxed head params (None-free dict; {} when the task has no head)."""
    head = self.head()
    if head is None:
      return {}
    h = self.config.model.hidden_size
    fake = {"pooled_text": np.zeros((1, h), np.float32), "pooled_image": np.zeros((1, h), np.float32)}
    return head.init({"params": key}, fake)["params"]

  # ---- evaluation helpers ----------------------------------------------------------------------
  @functools.cached_property
  def _embed(self):
    return contrastive_embedder(self.model)

  def zero_shot_similarity(self, params, images, texts):
    """[images, texts] cosine similarity of the backbone's CMCL embeddings (image rows of model
    image fields; texts as [CLS] w.. [SEP] id arrays)."""
    variables = {"params": params["backbone"]}
    image_emb = self.batched(lambda v, b: self._embed(v, b, "image_embedding"), variables, images)
    text_emb = self.batched(lambda v, b: self._embed(v, b, "text_embedding"), variables,
                            [{"input_ids": t} for t in texts])
    return image_emb @ text_emb.T

  def batched(self, fn, params, rows, batch_size=None):
    """fn(params, stacked rows) over `rows` in padded batches of config.eval_batch, sharded over
    the task's mesh (see batching.batched_apply)."""
    return batched_apply(fn, params, rows, batch_size or self.config.eval_batch, self.mesh)

  def write_predictions(self, predictions, name="predictions.jsonl"):
    if jax.process_index() != 0:
      return None
    self.workdir.mkdir(parents=True, exist_ok=True)
    path = self.workdir / name
    with path.open("w") as f:
      for p in predictions:
        f.write(json.dumps(p, default=_json_default) + "\n")
    return path

  def predict(self, params):
    return self.evaluate(params)[1]


def _json_default(value):
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f"cannot write {type(value).__name__} to JSON")
