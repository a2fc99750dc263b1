"""Shard format: ArrayRecord files of msgpack-encoded examples, plus one metadata.json per dataset.

An example is a flat dict of numpy arrays, strings and numbers. Lists of 1-D arrays (paraphrases,
hard negatives, retrieved texts) are stored ragged (values + lengths). Three kinds of dataset:

  text   input_ids [L] int32                          (token ids, no [CLS]/[SEP])
  image  image_id str; image_w, image_h int; and either
           region_features [N, D] float16|float32, boxes [N, 4] float32 (x1, y1, x2, y2 pixels),
           class_probs [N, C] float16|float32 (detector soft labels, optional)
         or pixels [H, W, 3] uint8
  pair   the image fields plus caption_ids [L] int32, optional tag_ids [T] int32 (detector object
         tags, captioning's extra source), and optional ragged paraphrase_ids,
         hard_negative_ids, retrieved_text_ids, and retrieved_images [k] int64 (record indices into
         an image dataset)

Layout of a dataset directory:
  metadata.json                      format, kind, counts per shard, dims, vocabulary, version
  <kind>-00000-of-00004.array_record ...
"""

import json
import pathlib

import msgpack
import numpy as np

from unimo_jax.errors import DataError

FORMAT = "unimo_jax.shards"
VERSION = 1
KINDS = ("text", "image", "pair")
METADATA = "metadata.json"

IMAGE_REGION_FIELDS = ("region_features", "boxes")
RAGGED_FIELDS = ("paraphrase_ids", "hard_negative_ids", "retrieved_text_ids")



# ---- codec -----------------------------------------------------------------------------------

def _encode_value(value):
  if isinstance(value, np.ndarray):
    return {"__nd__": 1, "d": value.dtype.str, "s": list(value.shape), "b": value.tobytes()}
  if isinstance(value, (list, tuple)) and value and all(isinstance(v, np.ndarray) for v in value):
    lengths = np.array([len(v) for v in value], np.int32)
    return {"__ragged__": 1, "v": _encode_value(np.concatenate(value)), "n": _encode_value(lengths)}
  if isinstance(value, np.generic):
    return value.item()
  return value


def _decode_value(value):
  if isinstance(value, dict) and value.get("__nd__") == 1:
    array = np.frombuffer(value["b"], dtype=np.dtype(value["d"]))
    return array.reshape(value["s"])
  if isinstance(value, dict) and value.get("__ragged__") == 1:
    values, lengths = _decode_value(value["v"]), _decode_value(value["n"])
    if int(lengths.sum()) != len(values):
      raise ValueError(f"ragged lengths sum to {int(lengths.sum())}, values hold {len(values)}")
    return np.split(values, np.cumsum(lengths)[:-1]) if len(lengths) else []
  return value


def encode_example(example: dict) -> bytes:
  return msgpack.packb({k: _encode_value(v) for k, v in example.items()}, use_bin_type=True)


def decode_example(data: bytes) -> dict:
  raw = msgpack.unpackb(data, raw=False)
  if not isinstance(raw, dict):
    raise ValueError(f"expected a msgpack map, found {type(raw).__name__}")
  return {k: _decode_value(v) for k, v in raw.items()}


# ---- schema ----------------------------------------------------------------------------------

def check_example(example: dict, kind: str, meta: dict, where: str) -> None:
  """Raises DataError (naming `where`) if `example` does not fit the dataset's kind and dims."""
  def fail(message):
    raise DataError(f"{where}: {message}")

  def need(name):
    if name not in example:
      fail(f"missing field {name!r} for a {kind} example (found {sorted(example)})")
    return example[name]

  if kind == "text":
    ids = np.asarray(need("input_ids"))
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer) or len(ids) == 0:
      fail(f"input_ids: expected a non-empty 1-D integer array, found {ids.dtype}{list(ids.shape)}")
    return
  if kind not in ("image", "pair"):
    fail(f"kind: expected one of {KINDS}, found {kind!r}")
  if not any(k in example for k in ("pixels", "region_features", "image_file", "image_bytes")):
    fail(f"expected 'region_features' (with 'boxes'), 'pixels', or an image file ('image_file' "
         f"or 'image_bytes') for a {kind} example, found {sorted(example)}")
  if "pixels" in example:
    pixels = np.asarray(example["pixels"])
    if pixels.ndim != 3 or pixels.shape[-1] != 3 or pixels.dtype != np.uint8:
      fail(f"pixels: expected uint8 [H, W, 3], found {pixels.dtype}{list(pixels.shape)}")
  if "region_features" in example:
    features = np.asarray(example["region_features"])
    dim = meta.get("region_feature_dim")
    if features.ndim != 2 or (dim is not None and features.shape[1] != dim):
      fail(f"region_features: expected shape [boxes, {dim}], found {list(features.shape)}")
    boxes = np.asarray(need("boxes"))
    if boxes.shape != (features.shape[0], 4):
      fail(f"boxes: expected shape [{features.shape[0]}, 4], found {list(boxes.shape)}")
    if "class_probs" in example:
      probs = np.asarray(example["class_probs"])
      classes = meta.get("num_classes")
      if probs.ndim != 2 or probs.shape[0] != features.shape[0] or (
          classes is not None and probs.shape[1] != classes):
        fail(f"class_probs: expected shape [{features.shape[0]}, {classes}], found "
             f"{list(probs.shape)}")
    for name in ("image_w", "image_h"):
      if float(need(name)) <= 0:
        fail(f"{name}: expected a positive size, found {example[name]}")
  if kind == "pair":
    caption = np.asarray(need("caption_ids"))
    if caption.ndim != 1 or len(caption) == 0:
      fail(f"caption_ids: expected a non-empty 1-D array, found {list(caption.shape)}")


# ---- writer ----------------------------------------------------------------------------------

def shard_name(kind: str, index: int, count: int) -> str:
  """The file name of shard `index` of `count`."""
  return f"{kind}-{index:05d}-of-{count:05d}.array_record"


def stored_example(example: dict, feature_dtype) -> dict:
  """The example as stored: region features and class / attribute probabilities cast to the
  dataset's feature dtype."""
  example = dict(example)
  for name in ("region_features", "class_probs", "attr_probs"):
    if name in example:
      example[name] = np.asarray(example[name]).astype(feature_dtype)
  return example


def writer_options(kind: str) -> str:
  """ArrayRecord options of a shard: one record per chunk (random access), and no compression
  for images and pairs: their float16 region features (or encoded JPEG/PNG) barely compress,
  and decompressing them took most of the input pipeline's time (reading a 100-region record:
  1.7 ms compressed, 0.36 ms not; docs/notes/input_pipeline.md). Token-id texts compress."""
  return "group_size:1" if kind == "text" else "group_size:1,uncompressed"


def write_shard(path, examples, kind: str, meta: dict) -> int:
  """Writes `examples` (checked against kind and meta) into one ArrayRecord file, atomically: a
  .tmp file renamed when complete, so a file under its final name is always whole. Returns the
  number written."""
  from array_record.python import array_record_module
  path = pathlib.Path(path)
  tmp = path.with_suffix(".tmp")
  writer = array_record_module.ArrayRecordWriter(str(tmp), writer_options(kind))
  count = 0
  try:
    for example in examples:
      example = stored_example(example, meta.get("feature_dtype", "float16"))
      check_example(example, kind, meta, f"{path} example {count}")
      writer.write(encode_example(example))
      count += 1
  finally:
    writer.close()
  tmp.rename(path)
  return count


class ShardWriter:
  """Writes examples of one kind into ArrayRecord shards and a metadata.json on close().

    with ShardWriter(out_dir, "pair", region_feature_dim=2048, num_classes=1601) as w:
      w.write(example)

  Region features are stored as `feature_dtype` (float16 by default). Extra keyword arguments
  (vocabulary, description, ...) go into metadata.json.
  """

  def __init__(self, out_dir, kind: str, records_per_shard: int = 10_000,
               feature_dtype: str = "float16", **metadata):
    from array_record.python import array_record_module  # heavy import, only when writing
    if kind not in KINDS:
      raise ValueError(f"kind: expected one of {KINDS}, found {kind!r}")
    self._module = array_record_module
    self.out_dir = pathlib.Path(out_dir)
    self.out_dir.mkdir(parents=True, exist_ok=True)
    self.kind = kind
    self.records_per_shard = records_per_shard
    self.feature_dtype = np.dtype(feature_dtype)
    self.meta = {"format": FORMAT, "version": VERSION, "kind": kind,
                 "feature_dtype": self.feature_dtype.name, **metadata}
    self._lengths = []
    self._writer = None
    self._count = 0

  def _open_next(self):
    if self._writer is not None:
      self._writer.close()
    path = self.out_dir / f"{self.kind}-{len(self._lengths):05d}.tmp"
    self._writer = self._module.ArrayRecordWriter(str(path), writer_options(self.kind))
    self._lengths.append(0)

  def write(self, example: dict) -> None:
    example = stored_example(example, self.feature_dtype)
    check_example(example, self.kind, self.meta, f"{self.out_dir} example {self._count}")
    if self._writer is None or self._lengths[-1] >= self.records_per_shard:
      self._open_next()
    self._writer.write(encode_example(example))
    self._lengths[-1] += 1
    self._count += 1

  def close(self) -> dict:
    if self._writer is not None:
      self._writer.close()
      self._writer = None
    count = len(self._lengths)
    shards = []
    for i, length in enumerate(self._lengths):
      final = self.out_dir / shard_name(self.kind, i, count)
      (self.out_dir / f"{self.kind}-{i:05d}.tmp").rename(final)
      shards.append({"file": final.name, "records": length})
    self.meta.update(num_records=self._count, shards=shards)
    (self.out_dir / METADATA).write_text(json.dumps(self.meta, indent=2))
    return self.meta

  def __enter__(self):
    return self

  def __exit__(self, exc_type, *_):
    if exc_type is None:
      self.close()
    elif self._writer is not None:
      self._writer.close()


def write_examples(out_dir, kind, examples, **kwargs) -> dict:
  """Writes an iterable of examples; returns the metadata."""
  with ShardWriter(out_dir, kind, **kwargs) as writer:
    for example in examples:
      writer.write(example)
  return writer.meta


# ---- reader ----------------------------------------------------------------------------------

def read_metadata(dataset_dir) -> dict:
  path = pathlib.Path(dataset_dir) / METADATA
  if not path.exists():
    raise DataError(f"{path}: not found; expected a dataset directory written by ShardWriter")
  try:
    meta = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise DataError(f"{path}: not valid JSON ({e})") from None
  if meta.get("format") != FORMAT:
    raise DataError(f"{path}: expected format {FORMAT!r}, found {meta.get('format')!r}")
  if meta.get("version", 0) > VERSION:
    raise DataError(f"{path}: version {meta['version']} is newer than this reader ({VERSION})")
  return meta


class ShardSource:
  """Random access to the decoded examples of a dataset directory (a grain data source).

  Every failure names the file and the record: a shard that will not open, a record that will
  not decode, an example that does not match the metadata.
  """

  def __init__(self, dataset_dir):
    self.dataset_dir = pathlib.Path(dataset_dir)
    self.meta = read_metadata(self.dataset_dir)
    self.kind = self.meta["kind"]
    self._files = [self.dataset_dir / s["file"] for s in self.meta["shards"]]
    self._lengths = [int(s["records"]) for s in self.meta["shards"]]
    self._starts = np.concatenate([[0], np.cumsum(self._lengths)]).astype(np.int64)
    self._readers = {}

  def __len__(self):
    return int(self._starts[-1])

  def __repr__(self):
    return f"ShardSource({str(self.dataset_dir)!r}, kind={self.kind!r}, records={len(self)})"

  def _reader(self, shard):
    if shard not in self._readers:
      from array_record.python import array_record_module
      path = self._files[shard]
      try:
        reader = array_record_module.ArrayRecordReader(str(path))
        found = reader.num_records()
      except Exception as e:  # missing, truncated or not an ArrayRecord file
        raise DataError(f"{path}: cannot open as ArrayRecord ({type(e).__name__}: {e})") from None
      if found != self._lengths[shard]:
        raise DataError(f"{path}: metadata says {self._lengths[shard]} records, file holds {found}")
      self._readers[shard] = reader
    return self._readers[shard]

  def locate(self, index: int) -> tuple:
    """(file, record within file) of global record `index`."""
    if not 0 <= index < len(self):
      raise IndexError(f"{self.dataset_dir}: record {index} out of range [0, {len(self)})")
    shard = int(np.searchsorted(self._starts, index, side="right") - 1)
    return shard, int(index - self._starts[shard])

  def __getitem__(self, index):
    shard, offset = self.locate(int(index))
    return self._checked(self._read(shard, [offset])[0], f"{self._files[shard]} record {offset}")

  def __iter__(self):
    """Every record in order, read a block at a time (a streaming pass; far fewer reads than
    indexing one record at a time)."""
    for shard, length in enumerate(self._lengths):
      for start in range(0, length, 1024):
        offsets = list(range(start, min(start + 1024, length)))
        for offset, data in zip(offsets, self._read(shard, offsets)):
          yield self._checked(data, f"{self._files[shard]} record {offset}")

  def _read(self, shard, offsets):
    try:
      return self._reader(shard).read(offsets)
    except DataError:
      raise
    except Exception as e:
      raise DataError(f"{self._files[shard]} records {offsets[0]}..{offsets[-1]}: cannot read "
                      f"({type(e).__name__}: {e})") from None

  def _checked(self, data, where):
    try:
      example = decode_example(data)
    except Exception as e:
      raise DataError(f"{where}: cannot decode ({type(e).__name__}: {e})") from None
    check_example(example, self.kind, self.meta, where)
    return example

  def __getstate__(self):  # readers are reopened in each worker
    state = dict(self.__dict__)
    state["_readers"] = {}
    return state
