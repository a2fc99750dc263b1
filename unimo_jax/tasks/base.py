"""What every fine-tuning task shares, and how a task is an Experiment (train/experiment.py):
its data paths (the configured split paths, or its synthetic version), the record access, the
deterministic step-indexed batches, the forward pass (backbone + head), batched evaluation.

A task subclass (one file in tasks/, plus configs/<task>.py) says:
  head()                      the linen head (or None: generation tasks use the LM head)
  synthetic_paths(root)       {'train', 'eval'} of its synthetic version under the scenes `root`
  usable(record) -> bool      whether a training record can train (others are counted, skipped)
  train_example(record, rng)  one training example: {'inputs': model fields, ...labels}
  loss(params, batch, rng)    (loss, metrics) inside the jitted step
  evaluate(params)            (metrics, predictions) on the eval split
  predict(params)             predictions on the predict split (default: the eval split)
"""

import functools
import pathlib
import sys

import jax
import numpy as np

from unimo_jax.data.synthetic import placeholder_records
from unimo_jax.data.pipeline.batching import batched_apply, contrastive_embedder, stack_rows
from unimo_jax.data.pipeline.model_inputs import ModelInputs
from unimo_jax.errors import DataError
from unimo_jax.data.formats.tfds_source import is_tfds, open_records
from unimo_jax.data.pipeline.caption_lengths import report_longer_captions
from unimo_jax.data.pipeline.host_batches import HostBatchIterator
from unimo_jax.data.pipeline.streams import ReadableRecords
from unimo_jax.data.synthetic.scene_dataset import ensure_synthetic_scenes
from unimo_jax.data.formats.tokenizers import load_tokenizer
from unimo_jax.model import Unimo
from unimo_jax.model.params import init_boxed_params
from unimo_jax.paths import as_path, is_remote, local_dir
from unimo_jax.train.checks import check_data_against_model
from unimo_jax.errors import ConfigError

SPLITS = ("train", "eval", "predict")


class StepBatches:
  """Global batch `step` of an endless shuffled stream over `indices`: epoch e is a permutation
  seeded by (seed, e). A pure function of the step, so a resumed run sees the same batches."""

  def __init__(self, indices, batch_size: int, seed: int):
    self.indices = np.asarray(indices)
    if len(self.indices) == 0:
      raise ValueError("training set: expected at least one usable record, found none")
    self.batch_size, self.seed = int(batch_size), int(seed)
    self._cached = (None, None)  # (epoch, its order): one tuple, so reader threads agree

  def _permutation(self, epoch):
    cached_epoch, order = self._cached
    if epoch != cached_epoch:
      rng = np.random.default_rng([self.seed, epoch])
      order = self.indices[rng.permutation(len(self.indices))]
      self._cached = (epoch, order)
    return order

  def __call__(self, step: int) -> np.ndarray:
    n = len(self.indices)
    out = []
    for position in range(step * self.batch_size, (step + 1) * self.batch_size):
      out.append(self._permutation(position // n)[position % n])
    return np.asarray(out)


def process_slice(global_indices, process_index: int, process_count: int):
  """This process's contiguous share of a global batch."""
  per = len(global_indices) // process_count
  return global_indices[process_index * per:(process_index + 1) * per]


class TaskBatches:
  """Host batch `step` of a task's training split (a data source for
  data/pipeline/host_batches.py): this process's rows of global batch `step` (StepBatches),
  each example from train_example with a Generator seeded by (seed, step, record index)."""

  def __init__(self, task, source, batches: StepBatches, process_index: int,
               process_count: int):
    self.task, self.source, self.batches = task, source, batches
    self.process_index, self.process_count = process_index, process_count

  def __len__(self):
    return sys.maxsize

  def __getitem__(self, step):
    indices = process_slice(self.batches(int(step)), self.process_index, self.process_count)
    return self.task.train_batch(self.source, indices, int(step))

  def __repr__(self):
    return f"TaskBatches({self.task.name})"


class Task:
  name = ""
  mask_kind = "bidirectional"
  pretrained_key = "backbone"  # init_from fills the backbone; the head starts fresh

  def __init__(self, config, workdir, mesh=None, *, data_paths: dict | None = None,
               tokenizer=None):
    self.config = config
    self.workdir = as_path(workdir)
    self.mesh = mesh
    self.model = Unimo(config.model)
    self._data_paths, self._tokenizer = data_paths, tokenizer
    self._sources = {}
    self.skipped = {}

  @staticmethod
  def batch_sizes(config) -> dict:
    return {"batch_size": int(config.batch_size)}

  @staticmethod
  def check_mode(mode: str) -> None:
    if mode == "check":
      raise ConfigError("--mode=check is for pretraining configs; tasks take train, eval or "
                        "predict")

  # ---- data ------------------------------------------------------------------------------------
  @functools.cached_property
  def data_paths(self) -> dict:
    """{'train', 'eval', 'predict', 'tokenizer'}: config.data.<split>_dir when train_dir is set,
    else the task's synthetic version next to the synthetic scenes (<init_from>/synthetic_scenes
    when the pretraining left them there); predict defaults to the eval split."""
    if self._data_paths is not None:
      return dict(self._data_paths)
    d = self.config.data
    if d.train_dir:
      if not d.tokenizer:
        raise ConfigError("data.tokenizer: expected the tokenizer of data.train_dir, found ''")
      paths = {"train": d.train_dir, "eval": d.eval_dir, "tokenizer": d.tokenizer}
    else:
      root = self.synthetic_root()
      paths = dict(self.synthetic_paths(root),
                   tokenizer=d.tokenizer or str(root / "tokenizer.model"))
      paths["eval"] = d.eval_dir or paths["eval"]
    paths["predict"] = d.predict_dir or paths["eval"]
    return paths

  def synthetic_root(self) -> pathlib.Path:
    """The synthetic scenes (generated on first use): data.synthetic_dir, else the pretraining's
    (<init_from>/synthetic_scenes), else <workdir>/synthetic_scenes."""
    d, init = self.config.data, self.config.init_from
    root = d.synthetic_dir
    pretraining_scenes = pathlib.Path(init) / "synthetic_scenes" if init else None
    if not root and init and not is_remote(init) and pretraining_scenes.is_dir():
      root = str(pretraining_scenes)
    return ensure_synthetic_scenes(root or local_dir(self.workdir, "synthetic_scenes"),
                                   pairs=int(d.synthetic_pairs),
                                   feature_dim=self.config.model.region_feature_dim,
                                   seed=self.config.seed)

  def synthetic_paths(self, root) -> dict:
    raise ConfigError(f"task {self.name!r} has no synthetic version: set data.train_dir, "
                      "data.eval_dir and data.tokenizer")

  def synthetic_sizes(self) -> dict:
    d = self.config.data
    return dict(train_scenes=int(d.synthetic_train_scenes),
                eval_scenes=int(d.synthetic_eval_scenes), seed=self.config.seed)

  @functools.cached_property
  def tokenizer(self):
    return self._tokenizer or load_tokenizer(self.data_paths["tokenizer"])

  @property
  def special(self) -> dict:
    return self.tokenizer.special_ids

  @functools.cached_property
  def inputs(self) -> ModelInputs:
    """The record -> model fields builder (region sizes from the model config)."""
    return ModelInputs.for_model(self.config.data, self.config.model, self.special)

  def check_data(self) -> None:
    shard_dirs = {f"data.{split}_dir": path for split, path in self.data_paths.items()
                  if split in SPLITS and path and (is_tfds(path) or as_path(path).is_dir())}
    check_data_against_model(self.config.model, self.tokenizer, self.data_paths["tokenizer"],
                             shard_dirs, self.config.data)
    if "data.train_dir" in shard_dirs:
      self.captions_cut = report_longer_captions(
          self.source("train"), int(self.config.data.max_caption_length),
          f"data.train_dir {shard_dirs['data.train_dir']}")

  def source(self, split):
    """The records of split 'train', 'eval' or 'predict', read once. With data.skip_bad_records,
    the records that cannot be read are left out and counted (skipped['<split>_unreadable'])."""
    if split not in self._sources:
      path = self.data_paths.get(split, "")
      if not path:
        raise DataError(f"data.{split}_dir: expected a dataset directory, found ''")
      source = self.read_split(path, split)
      if self.config.data.get("skip_bad_records") and hasattr(source, "meta"):
        source = ReadableRecords(source, f"data.{split}_dir {path}")
        if source.skipped:
          self.skipped[f"{split}_unreadable"] = source.skipped
      self._sources[split] = source
    return self._sources[split]

  def read_split(self, path, split):
    """Random-access records of one split: shards or a tfds:... name (data/formats/tfds_source.py; the
    split defaults to 'train' for training, else 'validation'); text tasks read TSVs."""
    return open_records(path, "pair", self.config.data, tokenizer=self.tokenizer,
                        default_split="train" if split == "train" else "validation")

  def image_inputs(self, record, where="", rng=None):
    """Model image fields of a record; an image with no regions is a DataError (nothing to see).
    Pixel mode with image files: `rng` (training) takes a random crop, else the centre one."""
    return self.inputs.image(record, where or "record", rng)

  def text_ids(self, ids, length):
    return self.inputs.text(ids, length)

  def pair_inputs(self, record, where="", rng=None):
    """Model fields of a record's image with its text (caption_ids): [IMG] v.. [CLS] w.. [SEP]."""
    return self.inputs.pair(record, where or "record", rng)

  def split_records(self, split, what="example"):
    """The first data.eval_limit records of a split (all when 0); an empty split is an error."""
    source = self.source(split)
    if len(source) == 0:
      raise DataError(f"data.{split}_dir: expected at least one {what}, found an empty split")
    limit = int(self.config.data.eval_limit) or len(source)
    return source, [source[i] for i in range(min(limit, len(source)))]

  def predicted_classes(self, params, split, what="example"):
    """(records, the head's argmax class per record) for a classification head on image + text."""
    _, records = self.split_records(split, what)
    rows = [self.eval_row(r, f"{split} record {i}") for i, r in enumerate(records)]
    return records, self.batched(jax.jit(self.eval_fn()), params, rows)

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

  @functools.cached_property
  def usable_train_indices(self) -> list:
    """train_indices of the training split, found once (epochs and the batches both need them)."""
    return self.train_indices(self.source("train"))

  def train_examples(self) -> int:
    """The usable training records (what one epoch passes over)."""
    return len(self.usable_train_indices)

  def make_batches(self):
    return StepBatches(self.usable_train_indices, self.config.batch_size, self.config.seed)

  def train_batch(self, source, indices, step):
    rows = [self.train_example(source[int(i)], np.random.default_rng(
        [self.config.seed, step, int(i)])) for i in indices]
    return stack_rows(rows)

  def train_batches(self) -> HostBatchIterator:
    """This process's rows of global batch 0, 1, ... (a pure function of the step), built by
    data.workers worker processes or in this one."""
    source = TaskBatches(self, self.source("train"), self.make_batches(), jax.process_index(),
                         jax.process_count())
    return HostBatchIterator(source, self.config.data)

  def __getstate__(self):
    """What a worker process needs to build training batches: not the mesh, not compiled
    functions (cached properties holding them are dropped; a worker never evaluates)."""
    state = dict(self.__dict__)
    state["mesh"] = None
    state.pop("_embed", None)  # the jitted embedder (cached_property)
    return state

  # ---- evaluation batches, and their shapes without data (compile mode) ------------------------
  def eval_fn(self):
    """(params, eval batch) -> outputs, as evaluation jits it: here the head's argmax class."""
    return lambda p, b: jax.numpy.argmax(self.forward(p, b)[1], -1)

  def eval_row(self, record, where="record"):
    """One row of an eval batch: the record's image with its text."""
    return self.pair_inputs(record, where)

  def placeholder_record(self) -> dict:
    """A record of the largest shapes the config allows (data/synthetic/placeholder_records.py)."""
    return placeholder_records.pair_record(self.config.data, self.config.model)

  def batch_spec(self) -> dict:
    """The global training batch's shapes and dtypes, from the placeholder record through
    train_example (so exactly the shapes training feeds)."""
    example = self.train_example(self.placeholder_record(), np.random.default_rng(0))
    size = int(self.config.batch_size)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct((size,) + np.shape(x),
                                                       np.asarray(x).dtype), example)

  def eval_programs(self) -> dict:
    """{name: (fn(params, batch), one row)} of what evaluation runs, for --mode=compile."""
    return {"eval_step": (self.eval_fn(), self.eval_row(self.placeholder_record()))}

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

  def boxed_params(self, key):
    """{'backbone': the UNIMO parameters, 'head': the task head's}, with logical metadata."""
    return {"backbone": init_boxed_params(self.config.model, key),
            "head": self.init_head(jax.random.fold_in(key, 7))}

  def init_head(self, key):
    """Boxed head params (None-free dict; {} when the task has no head)."""
    head = self.head()
    if head is None:
      return {}
    h = self.config.model.hidden_size
    fake = {"pooled_text": np.zeros((1, h), np.float32),
            "pooled_image": np.zeros((1, h), np.float32)}
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
    the task's mesh (see data/pipeline/batching.py: batched_apply)."""
    return batched_apply(fn, params, rows, batch_size or self.config.eval_batch, self.mesh)

  def predict(self, params):
    return self.evaluate(params)[1]
