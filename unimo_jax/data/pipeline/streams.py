"""grain pipelines: the pretraining streams over ArrayRecord shards, one host batch per step.

Each stream: MapDataset.source(shards)[process_index::process_count] -> shuffle(seed) (a new
order every epoch) -> repeat. One grain MapDataset's element `step` is the host batch of that
step: each stream's records step*B .. step*B+B-1 through its batch transform
(batch_transforms.py), with one Generator per example seeded by (seed, step, slot). Because an
element depends only on its step, worker processes (data.workers, grain's mp_prefetch) build
every workers-th batch each and the order is that of one process. The batch's terms (see
unimo_jax/objectives/pretraining_loss.py):
  text  -> text_mlm, text_seq2seq     (the same documents, masked two ways)
  image -> image_mrm
  pair  -> pair_mlm, pair_mrm, pair_caption, cmcl
Its state is the next step ({'step': N}), saved with checkpoints.
`to_global_arrays` turns the host batch into jax.Arrays sharded on the batch axes.
"""

import logging
import sys

import numpy as np

from unimo_jax.data.pipeline import examples
from unimo_jax.data.pipeline.batch_transforms import BatchTransforms, prefixed
from unimo_jax.data.pipeline.model_inputs import ModelInputs
from unimo_jax.errors import DataError
from unimo_jax.data.formats.tfds_source import open_records

STREAMS = ("text", "image", "pair")  # the pretraining streams, in mixture order


class SkipCounter:
  """The count of bad records skipped so far (data.skip_bad_records)."""

  def __init__(self):
    self.count = 0

  def add(self, count: int) -> None:
    self.count += int(count)
    logging.warning("skipped %d bad record(s) (%d so far)", count, self.count)


class _Records:
  """A record source that returns None for a bad record when skipping is configured (logged
  here; counted by the batch that replaces it, see batch_records)."""

  def __init__(self, source, skip: bool):
    self.source, self.skip = source, skip

  @property
  def per_host(self):
    return getattr(self.source, "per_host", False)

  def __len__(self):
    return len(self.source)

  def __getitem__(self, index):
    try:
      return self.source[index]
    except DataError as e:
      if not self.skip:
        raise
      logging.warning("skipped bad record: %s", e)
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
    out = prefixed("text_mlm", examples.mlm_fields(
        ids, self.cfg.max_text_length, self.cfg, self.special, self.vocab_size, rng))
    out.update(prefixed("text_seq2seq", examples.seq2seq_fields(ids, self.cfg, self.special, rng)))
    return out

  def image(self, record, rng):
    if record is None:
      return None
    return prefixed("image_mrm", examples.mrm_fields(self.inputs.regions(record), self.cfg, rng))

  def pair(self, record, rng):
    if record is None:
      return None
    cfg, special = self.cfg, self.special
    regions = None if self.pixels else self.inputs.regions(record)
    # pixel mode: an image file is randomly cropped (training's augmentation)
    image = self.inputs.image(record, rng=rng) if self.pixels else examples.image_inputs(regions)
    caption = record["caption_ids"]
    text = self.inputs.text(caption)
    out = prefixed("pair_mlm", dict(image, **examples.mlm_fields(
        caption, cfg.max_caption_length, cfg, special, self.vocab_size, rng)))
    if not self.pixels:  # masked region prediction needs detector regions
      out.update(prefixed("pair_mrm", dict(examples.mrm_fields(regions, cfg, rng),
                                            input_ids=text)))
    out.update(prefixed("pair_caption", dict(image, **examples.caption_fields(caption, cfg,
                                                                                special))))
    out.update(prefixed("cmcl/image", image))
    out["cmcl/text/input_ids"] = text
    if cfg.cmcl_extra_positives + cfg.cmcl_hard_negatives > 0:
      out.update(self.extra_texts(record, rng))
    out.update(self._extra_images(record, image, rng))
    return out

  def extra_texts(self, record, rng) -> dict:
    """The CMCL extra texts of a pair: its paraphrases and retrieved texts (positives), then its
    hard negatives, sampled into the configured slots."""
    positives = list(record.get("paraphrase_ids", [])) + list(
        record.get("retrieved_text_ids", []))
    extra = examples.extra_text_fields(positives, record.get("hard_negative_ids", []), self.cfg,
                                       self.special, rng)
    return {"cmcl/extra_text/input_ids": extra["input_ids"],
            "cmcl/extra_text_positive": extra["positive"],
            "cmcl/extra_text_valid": extra["valid"]}

  def chosen_extra_images(self, record, rng) -> np.ndarray:
    """Indices (into the image split) of the retrieved images that fill the extra-image slots."""
    refs = np.asarray(record.get("retrieved_images", np.zeros(0, np.int64)))
    if self.image_lookup is None:
      return refs[:0]
    return refs[rng.permutation(len(refs))[:self.cfg.cmcl_extra_images]]

  def _extra_images(self, record, image, rng):
    """cfg.cmcl_extra_images retrieved images (slots beyond those available are invalid)."""
    count = self.cfg.cmcl_extra_images
    if count <= 0:
      return {}
    chosen = self.chosen_extra_images(record, rng)
    blocks = [self.inputs.image(self.image_lookup[int(i)]) for i in chosen]
    blocks += [None] * (count - len(blocks))
    stacked = {k: np.stack([b[k] if b is not None else np.zeros_like(v) for b in blocks])
               for k, v in image.items()}
    out = prefixed("cmcl/extra_image", stacked)
    out["cmcl/extra_image_valid"] = np.arange(count) < len(chosen)
    return out


class TwinGroups:
  """Hard-negative images for CMCL: the pair batch is built two by two, each of its first half's
  records followed by one of its twin_pairs (pair indices into `lookup`, the whole split) with
  probability `fraction`, else by a random pair of the split, so that each pair sits next to its
  hard-negative image in the contrastive batch. The partner is drawn from the record's own
  Generator (that of its slot) before its example is built."""

  def __init__(self, lookup, fraction: float):
    self.lookup, self.fraction = lookup, float(fraction)

  def partner(self, record, rng) -> int:
    """The index of the record co-batched with `record`."""
    twins = np.asarray(record.get("twin_pairs", np.zeros(0, np.int64)))
    if len(twins) and rng.random() < self.fraction:
      return int(twins[rng.integers(len(twins))])
    return int(rng.integers(len(self.lookup)))

  def arrange(self, records, rngs) -> list:
    """[r0, partner(r0), r1, partner(r1), ...] for the slots' Generators rngs[0], rngs[2], ..."""
    out = []
    for i, record in enumerate(records):
      rng = rngs[2 * i]
      for _ in range(100):  # an unreadable partner (skip_bad_records): draw another
        other = self.lookup[self.partner(record, rng)]
        if other is not None:
          break
      else:
        raise DataError("data.cmcl_twin_fraction: 100 partners in a row could not be read")
      out += [record, other]
    return out


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


def example_rngs(seed: int, step: int, count: int) -> list:
  """The Generators of a stream's examples in the host batch of `step`: one per slot, seeded by
  (seed, step, slot), so a batch is a pure function of its step."""
  return [np.random.default_rng([seed, step, slot]) for slot in range(count)]


def batch_records(records, start: int, size: int) -> tuple:
  """(records start .. start+size-1 of an endless record stream, how many were unreadable): an
  unreadable record (None: skip_bad_records) is replaced by the next readable one after the
  batch (a record of the next batch, which it then meets twice)."""
  batch = [records[start + i] for i in range(size)]
  bad = sum(r is None for r in batch)
  spare = start + size
  for i in range(size):
    while batch[i] is None:
      batch[i] = records[spare]
      spare += 1
      bad += batch[i] is None
      if spare - start - size > 100 * size + 100:
        raise DataError(f"input stream: more than {100 * size} records after step {start // size}"
                        " in a row could not be read")
  return batch, bad


class PretrainingBatches:
  """Host batch `step` of the pretraining streams (a grain data source: host_batches.py): every
  stream's terms ({term: {field: [batch, ...]}}) and '_skipped', the unreadable records
  replaced."""

  def __init__(self, streams):
    self.streams = streams

  def __len__(self):
    return sys.maxsize

  def __getitem__(self, step):
    out, skipped = {}, 0
    for stream in self.streams:
      fields, bad = stream.batch(int(step))
      out.update(fields)
      skipped += bad
    batch = unflatten(out)
    batch["_skipped"] = np.int64(skipped)
    return batch

  def __repr__(self):
    return f"PretrainingBatches({[s.name for s in self.streams]})"


class Stream:
  """One pretraining stream: its endless shuffled record stream, its batch transform, this host's
  batch size, its seed, and TwinGroups when the pair batch is built two by two."""

  def __init__(self, name, records, transform, batch_size, seed, twins=None):
    self.name, self.records, self.transform = name, records, transform
    self.batch_size, self.seed, self.twins = int(batch_size), int(seed), twins

  def batch(self, step: int) -> tuple:
    """(this stream's fields of the host batch of `step`, unreadable records replaced)."""
    read = self.batch_size // 2 if self.twins else self.batch_size
    records, bad = batch_records(self.records, step * read, read)
    rngs = example_rngs(self.seed, step, self.batch_size)
    if self.twins:
      records = self.twins.arrange(records, rngs)
    return self.transform(records, rngs), bad


def make_pretraining_iterator(cfg, batch_sizes: dict, special: dict, vocab_size: int, *,
                              dirs: dict | None = None, process_index: int | None = None,
                              process_count: int | None = None,
                              tokenizer=None, image_size: int | None = None):
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
  skip = bool(cfg.skip_bad_records)
  if dirs is None:
    dirs = {"text": cfg.text_dir, "image": cfg.image_dir, "pair": cfg.pair_dir}
  streams = []
  image_lookup, image_meta = None, None
  if dirs.get("image"):
    image_lookup = _Records(open_records(dirs["image"], "image", cfg, tokenizer=tokenizer),
                            skip)  # retrieved images: looked up by index, the whole split
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
                      skip)
    if source.source.kind != name:
      raise DataError(f"data.{name}_dir {dirs[name]}: expected a {name} dataset, found kind "
                      f"{source.source.kind!r}")
    meta = (source.source.meta if name != "text" else image_meta) or {}
    inputs = ModelInputs(cfg, special, meta.get("region_feature_dim"), meta.get("num_classes"),
                         image_size)
    transforms = BatchTransforms(Transforms(cfg, special, vocab_size, inputs, image_lookup))
    twins = None
    if name == "pair" and cfg.cmcl_twin_fraction > 0:
      if (size // process_count) % 2:
        raise ValueError(f"batch.pair: data.cmcl_twin_fraction co-batches pairs two by two; "
                         f"{size // process_count} pairs per host is odd")
      whole = _Records(open_records(dirs[name], name, cfg, tokenizer=tokenizer), skip)
      twins = TwinGroups(whole, cfg.cmcl_twin_fraction)
    records = host_records(source, seed=cfg.seed + offset, process_index=process_index,
                           process_count=process_count).repeat(None)
    streams.append(Stream(name, records, getattr(transforms, name), size // process_count,
                          cfg.seed + offset, twins))
  if not streams:
    raise ValueError(f"batch sizes: expected at least one of {STREAMS} > 0, found {batch_sizes}")
  from unimo_jax.data.pipeline.host_batches import HostBatchIterator
  return HostBatchIterator(PretrainingBatches(streams), cfg)


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
