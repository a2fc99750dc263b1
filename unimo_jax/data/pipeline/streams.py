"""grain pipelines: per-modality streams over ArrayRecord shards, mixed into one batch per step.

Each stream: MapDataset.source(shards)[process_index::process_count] -> shuffle(seed) (a new
order every epoch) -> repeat -> random_map(seeded per-example transform: tokenised, masked, padded
to fixed shapes) -> in-process reading with threads -> batch(per-host size). The mixture yields
one dict per step whose keys are the pretraining terms (see unimo_jax/objectives/pretraining_loss.py):
  text  -> text_mlm, text_seq2seq     (the same documents, masked two ways)
  image -> image_mrm
  pair  -> pair_mlm, pair_mrm, pair_caption, cmcl
Its state (`get_state` / `set_state`) is a small JSON-able dict, saved with checkpoints.
`to_global_arrays` turns the host batch into jax.Arrays sharded on the batch axes.
"""

import json
import logging
import threading

import numpy as np

from unimo_jax.data.pipeline import examples
from unimo_jax.data.pipeline.model_inputs import ModelInputs
from unimo_jax.errors import DataError
from unimo_jax.data.formats.tfds_source import open_records

STREAMS = ("text", "image", "pair")  # the pretraining streams, in mixture order


class SkipCounter:
  """Thread-safe count of skipped bad records, logged as they happen."""

  def __init__(self):
    self._lock = threading.Lock()
    self.count = 0

  def skip(self, error):
    with self._lock:
      self.count += 1
      count = self.count
    logging.warning("skipped bad record (%d so far): %s", count, error)


class _Records:
  """A record source that returns None for a bad record when skipping is configured."""

  def __init__(self, source, counter: SkipCounter | None):
    self.source, self.counter = source, counter

  @property
  def per_host(self):
    return getattr(self.source, "per_host", False)

  def __len__(self):
    return len(self.source)

  def __getitem__(self, index):
    try:
      return self.source[index]
    except DataError as e:
      if self.counter is None:
        raise
      self.counter.skip(e)
      return None


class ReadableRecords:
  """The records of `source` that can be read, found by reading each once (for the splits a
  task or the held-out evaluation reads whole, with data.skip_bad_records): a record that raises
  DataError (a corrupt chunk, a record that does not decode or fit the schema) is logged,
  counted in `skipped`, and left out; the others keep their order."""

  def __init__(self, source, where: str):
    self.source = source
    self.meta = getattr(source, "meta", {})
    self.skipped = 0
    self._indices = []
    for i in range(len(source)):
      try:
        source[i]
      except DataError as e:
        self.skipped += 1
        logging.warning("%s: skipped unreadable record %d (%d so far): %s", where, i,
                        self.skipped, e)
        continue
      self._indices.append(i)

  def __len__(self):
    return len(self._indices)

  def __getitem__(self, index):
    return self.source[self._indices[index]]


def _prefixed(prefix, fields):
  return {f"{prefix}/{k}": v for k, v in fields.items()}


def unflatten(batch: dict) -> dict:
  """{'a/b/c': x} -> {'a': {'b': {'c': x}}}."""
  out = {}
  for key, value in batch.items():
    node = out
    *parents, leaf = key.split("/")
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return out


class Transforms:
  """Per-example transforms of each stream (picklable: plain attributes only). Model fields
  come from `inputs` (data/pipeline/model_inputs.py); this adds the masking of every pretraining term."""

  def __init__(self, cfg, special: dict, vocab_size: int, inputs: ModelInputs,
               image_lookup=None):
    self.cfg, self.special, self.vocab_size = cfg, special, vocab_size
    self.inputs = inputs
    self.image_lookup = image_lookup
    self.pixels = inputs.pixels

  def text(self, record, rng):
    if record is None:
      return None
    ids = record["input_ids"]
    out = _prefixed("text_mlm", examples.mlm_fields(
        ids, self.cfg.max_text_length, self.cfg, self.special, self.vocab_size, rng))
    out.update(_prefixed("text_seq2seq", examples.seq2seq_fields(ids, self.cfg, self.special, rng)))
    return out

  def image(self, record, rng):
    if record is None:
      return None
    return _prefixed("image_mrm", examples.mrm_fields(self.inputs.regions(record), self.cfg, rng))

  def pair(self, record, rng):
    if record is None:
      return None
    cfg, special = self.cfg, self.special
    regions = None if self.pixels else self.inputs.regions(record)
    # pixel mode: an image file is randomly cropped (training's augmentation)
    image = self.inputs.image(record, rng=rng) if self.pixels else examples.image_inputs(regions)
    caption = record["caption_ids"]
    text = self.inputs.text(caption)
    out = _prefixed("pair_mlm", dict(image, **examples.mlm_fields(
        caption, cfg.max_caption_length, cfg, special, self.vocab_size, rng)))
    if not self.pixels:  # masked region prediction needs detector regions
      out.update(_prefixed("pair_mrm", dict(examples.mrm_fields(regions, cfg, rng),
                                            input_ids=text)))
    out.update(_prefixed("pair_caption", dict(image, **examples.caption_fields(caption, cfg,
                                                                                special))))
    out.update(_prefixed("cmcl/image", image))
    out["cmcl/text/input_ids"] = text
    if cfg.cmcl_extra_positives + cfg.cmcl_hard_negatives > 0:
      positives = list(record.get("paraphrase_ids", [])) + list(
          record.get("retrieved_text_ids", []))
      extra = examples.extra_text_fields(positives, record.get("hard_negative_ids", []), cfg,
                                         special, rng)
      out["cmcl/extra_text/input_ids"] = extra["input_ids"]
      out["cmcl/extra_text_positive"] = extra["positive"]
      out["cmcl/extra_text_valid"] = extra["valid"]
    out.update(self._extra_images(record, image, rng))
    return out

  def _extra_images(self, record, image, rng):
    """cfg.cmcl_extra_images retrieved images (slots beyond those available are invalid)."""
    count = self.cfg.cmcl_extra_images
    if count <= 0:
      return {}
    refs = np.asarray(record.get("retrieved_images", np.zeros(0, np.int64)))
    chosen = refs[rng.permutation(len(refs))[:count]] if self.image_lookup is not None else []
    blocks, valid = [], []
    for slot in range(count):
      if slot < len(chosen):
        blocks.append(self.inputs.image(self.image_lookup[int(chosen[slot])]))
        valid.append(True)
      else:
        blocks.append(None)
        valid.append(False)
    stacked = {k: np.stack([b[k] if b is not None else np.zeros_like(v) for b in blocks])
               for k, v in image.items()}
    out = _prefixed("cmcl/extra_image", stacked)
    out["cmcl/extra_image_valid"] = np.array(valid, bool)
    return out


class TwinGroups:
  """The pair transform two records at a time: a pair and, with probability `fraction`, one of
  its twin_pairs (pair indices into `lookup`, the whole split), else a random pair of the split.
  Returns the two examples stacked ([2, ...] leaves), so that a batch of groups, merged
  (merge_groups), holds each pair next to its hard-negative image in the contrastive batch."""

  def __init__(self, pair, lookup, fraction: float):
    self.pair, self.lookup, self.fraction = pair, lookup, float(fraction)

  def partner(self, record, rng) -> int:
    """The index of the record co-batched with `record`."""
    twins = np.asarray(record.get("twin_pairs", np.zeros(0, np.int64)))
    if len(twins) and rng.random() < self.fraction:
      return int(twins[rng.integers(len(twins))])
    return int(rng.integers(len(self.lookup)))

  def __call__(self, record, rng):
    if record is None:
      return None
    other = self.lookup[self.partner(record, rng)]
    first = self.pair(record, rng)
    second = self.pair(other, rng) if other is not None else None
    if second is None:
      return None
    return {k: np.stack([first[k], second[k]]) for k in first}


def merge_groups(batch):
  """[groups, 2, ...] leaves -> [2 * groups, ...]: each group's two examples side by side."""
  return {k: v.reshape((-1,) + v.shape[2:]) for k, v in batch.items()}


def host_records(source, *, seed, process_index, process_count):
  """This host's records (process_index::process_count, or all of a source that holds only
  this host's share already: per_host), shuffled by `seed`: one epoch."""
  import grain
  if getattr(source, "per_host", False):
    if not len(source):
      raise DataError(f"{source}: this host's share of the split is empty")
    return grain.MapDataset.source(source).shuffle(seed=seed)
  if len(source) < process_count:
    raise DataError(f"{source}: {len(source)} records cannot be split over {process_count} hosts")
  return grain.MapDataset.source(source)[process_index::process_count].shuffle(seed=seed)


def _stream(source, transform, *, batch_size, seed, process_index, process_count, cfg,
            groups=False):
  """groups: the transform returns two examples at a time (TwinGroups), batched as pairs of
  examples and merged."""
  import grain
  ds = host_records(source, seed=seed, process_index=process_index, process_count=process_count)
  ds = ds.repeat(None).random_map(transform, seed=seed)
  ds = ds.filter(lambda x: x is not None)
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=cfg.num_threads,
                                            prefetch_buffer_size=cfg.prefetch))
  if not groups:
    return ds.batch(batch_size, drop_remainder=True)
  return ds.batch(batch_size // 2, drop_remainder=True).map(merge_groups)


class MixtureIterator:
  """Yields {term: sub-batch} from the text, image and pair streams, one batch of each per step."""

  def __init__(self, iterators: dict, counter: SkipCounter):
    self.iterators = iterators
    self.counter = counter

  def __iter__(self):
    return self

  def __next__(self):
    batch = {}
    for name, it in self.iterators.items():
      batch.update(unflatten(next(it)))
    return batch

  def get_state(self) -> dict:
    return {name: json.loads(json.dumps(it.get_state(), default=_bytes_to_list))
            for name, it in self.iterators.items()}

  def set_state(self, state: dict) -> None:
    missing = sorted(set(self.iterators) - set(state))
    if missing:
      raise ValueError(f"iterator state: expected streams {sorted(self.iterators)}, missing "
                       f"{missing}")
    for name, it in self.iterators.items():
      it.set_state(state[name])


def _bytes_to_list(value):
  if isinstance(value, (bytes, bytearray)):
    return list(value)
  if isinstance(value, np.generic):
    return value.item()
  raise TypeError(f"cannot serialise {type(value).__name__} in iterator state")


def make_pretraining_iterator(cfg, batch_sizes: dict, special: dict, vocab_size: int, *,
                              dirs: dict | None = None, process_index: int | None = None,
                              process_count: int | None = None,
                              tokenizer=None, image_size: int | None = None) -> MixtureIterator:
  """The mixed pretraining stream for this host.

  cfg: the data config (examples.data_config()); batch_sizes: global examples per step for
  'text', 'image' and 'pair' (0 or absent = no such stream); special / vocab_size: the
  tokenizer's special ids and size; dirs: {'text', 'image', 'pair'} dataset directories
  (default cfg.text_dir / image_dir / pair_dir), each a shard directory or a tfds:... name
  (data/formats/tfds_source.py; `tokenizer` tokenizes its texts). Each host reads records
  process_index::process_count (tfds: its split_for_jax_process share) and yields
  batch_size // process_count examples per stream. image_size: the model's, for pixel mode
  on image files (image_bytes / image_file), which are cropped to it.
  """
  if process_index is None or process_count is None:
    import jax
    process_index, process_count = jax.process_index(), jax.process_count()
  counter = SkipCounter() if cfg.skip_bad_records else None
  if dirs is None:
    dirs = {"text": cfg.text_dir, "image": cfg.image_dir, "pair": cfg.pair_dir}
  iterators = {}
  image_lookup, image_meta = None, None
  if dirs.get("image"):
    image_lookup = _Records(open_records(dirs["image"], "image", cfg, tokenizer=tokenizer),
                            counter)  # retrieved images: looked up by index, the whole split
    image_meta = image_lookup.source.meta
  for offset, name in enumerate(STREAMS):
    size = int(batch_sizes.get(name, 0) or 0)
    if not size:
      continue
    if name == "image" and cfg.image_input == "pixels":
      raise ValueError("batch.image: the image-only stream trains masked region prediction, "
                       "which needs data.image_input='regions'; set the image batch to 0")
    if not dirs.get(name):
      raise ValueError(f"data.{name}_dir: a {name} batch of {size} needs a dataset directory")
    if size % process_count:
      raise ValueError(f"batch.{name}: {size} is not divisible by the {process_count} hosts")
    source = _Records(open_records(dirs[name], name, cfg, tokenizer=tokenizer,
                                   process_index=process_index, process_count=process_count),
                      counter)
    if source.source.kind != name:
      raise DataError(f"data.{name}_dir {dirs[name]}: expected a {name} dataset, found kind "
                      f"{source.source.kind!r}")
    meta = (source.source.meta if name != "text" else image_meta) or {}
    inputs = ModelInputs(cfg, special, meta.get("region_feature_dim"), meta.get("num_classes"),
                         image_size)
    transforms = Transforms(cfg, special, vocab_size, inputs, image_lookup)
    transform, groups = getattr(transforms, name), False
    if name == "pair" and cfg.cmcl_twin_fraction > 0:
      if (size // process_count) % 2:
        raise ValueError(f"batch.pair: data.cmcl_twin_fraction co-batches pairs two by two; "
                         f"{size // process_count} pairs per host is odd")
      whole = _Records(open_records(dirs[name], name, cfg, tokenizer=tokenizer), counter)
      transform, groups = TwinGroups(transform, whole, cfg.cmcl_twin_fraction), True
    iterators[name] = iter(_stream(
        source, transform, batch_size=size // process_count, seed=cfg.seed + offset,
        process_index=process_index, process_count=process_count, cfg=cfg, groups=groups))
  if not iterators:
    raise ValueError(f"batch sizes: expected at least one of {STREAMS} > 0, found {batch_sizes}")
  return MixtureIterator(iterators, counter or SkipCounter())


def to_global_arrays(batch, mesh):
  """Host-local numpy batch -> jax.Arrays sharded on the batch axes (leading dimension)."""
  import jax
  from unimo_jax.parallel import batch_sharding
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(batch_sharding(mesh, np.ndim(x)), x), batch)


def batch_spec(cfg, model_cfg, batch_sizes: dict, special: dict, vocab_size: int) -> dict:
  """The global mixed batch's shapes and dtypes (jax.ShapeDtypeStruct leaves) without reading
  data: placeholder records of the largest shapes (data/synthetic/placeholder_records.py) go through the
  streams' real transforms, then every leaf takes its stream's global batch size in front."""
  import jax
  from unimo_jax.data.synthetic import placeholder_records as placeholder
  inputs = ModelInputs.for_model(cfg, model_cfg, special)
  image = placeholder.image_record(cfg, model_cfg)
  transforms = Transforms(cfg, special, vocab_size, inputs, image_lookup=[image])
  records = {"text": placeholder.text_record(cfg), "image": image,
             "pair": placeholder.pair_record(cfg, model_cfg)}
  spec = {}
  for name in STREAMS:
    size = int(batch_sizes.get(name, 0) or 0)
    if size:
      example = unflatten(getattr(transforms, name)(records[name], np.random.default_rng(0)))
      spec.update(jax.tree.map(
          lambda x, n=size: jax.ShapeDtypeStruct((n,) + np.shape(x), np.asarray(x).dtype),
          example))
  return spec
