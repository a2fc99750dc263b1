"""tensorflow-datasets by name, wherever a dataset directory is configured.

  tfds:<name>[/<config>][:<version>][@<split>]     e.g. tfds:coco_captions:1.0.0@train[:95%]

The split is any tfds split string (slices, percents, '+'); without one, the caller's default
(the stream's or task split's own name). The dataset must be prepared in the array_record
format, which tfds reads without TensorFlow (`tfds.data_source`: random access, numpy out).
data.tfds_data_dir is where it is prepared ('' = tfds's default, $TFDS_DATA_DIR or
~/tensorflow_datasets).

Records come out as the shards' (data/formats/records.py), so every transform takes them unchanged:
  - data.tfds_features 'ours=theirs,...' renames features ('caption=captions/text,
    image_bytes=image'; '/' walks into nested features); features not named keep their names;
  - Text features (bytes) become str; a list where one text is expected (several captions of an
    image) gives its first;
  - a feature mapped to image_bytes (or named so) is read undecoded and decoded with Pillow by
    data/formats/images.py; ragged lists are {'values', 'lengths'} pairs;
  - a caption or text with no ids is tokenized with the run's tokenizer (caption -> caption_ids,
    text -> input_ids).
Pretraining streams read this host's share through tfds.split_for_jax_process; the per-host
split is exact and disjoint, so the pipeline takes every record of it.
"""

import numpy as np

from unimo_jax.data.formats.records import RAGGED_FIELDS, check_example
from unimo_jax.errors import DataError

PREFIX = "tfds:"
IMAGE_FIELD = "image_bytes"


def is_tfds(path) -> bool:
  return isinstance(path, str) and path.startswith(PREFIX)


def parse_tfds_path(path: str, default_split: str) -> tuple:
  """'tfds:name/config:1.0.0@train[:10%]' -> ('name/config:1.0.0', 'train[:10%]')."""
  body = path[len(PREFIX):]
  name, _, split = body.partition("@")
  if not name or "@" in split:
    raise DataError(f"{path!r}: expected tfds:<name>[/<config>][:<version>][@<split>]")
  return name, split or default_split


def parse_feature_map(text: str) -> dict:
  """'ours=theirs,ours2=a/b' -> {'ours': 'theirs', 'ours2': 'a/b'}."""
  out = {}
  for item in filter(None, (t.strip() for t in (text or "").split(","))):
    ours, sep, theirs = item.partition("=")
    if not sep or not ours.strip() or not theirs.strip():
      raise DataError(f"data.tfds_features: expected 'ours=theirs' items separated by ',', "
                      f"found {item!r}")
    out[ours.strip()] = theirs.strip()
  return out


def _nested(path, leaf):
  """'a/b' -> {'a': {'b': leaf}}."""
  node = leaf
  for part in reversed(path.split("/")):
    node = {part: node}
  return node


def _merge(into, other):
  for key, value in other.items():
    if isinstance(value, dict) and isinstance(into.get(key), dict):
      _merge(into[key], value)
    else:
      into[key] = value
  return into


def _walk(raw, path, where):
  node = raw
  for part in path.split("/"):
    if not isinstance(node, dict) or part not in node:
      found = sorted(node) if isinstance(node, dict) else type(node).__name__
      raise DataError(f"{where}: data.tfds_features names feature {path!r}, not in the record "
                      f"(found {found})")
    node = node[part]
  return node


def _text(value):
  return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else value


def _normalise(name, value):
  """One tfds value as the shards hold it."""
  if name == IMAGE_FIELD:
    return value[0] if isinstance(value, list) else value
  if name in RAGGED_FIELDS and isinstance(value, dict) and set(value) == {"values", "lengths"}:
    lengths = np.asarray(value["lengths"])
    return np.split(np.asarray(value["values"]), np.cumsum(lengths)[:-1]) if len(lengths) else []
  if isinstance(value, (bytes, np.bytes_)):
    return _text(value)
  if isinstance(value, list):
    values = [_text(v) for v in value]
    if name in ("caption", "text"):  # one text per record: an image's first caption
      return values[0] if values else ""
    return values
  if isinstance(value, np.ndarray) and value.dtype.kind in "SO":
    values = [_text(v) for v in value.tolist()]
    return values[0] if name in ("caption", "text") and values else values
  return value


class TfdsSource:
  """Random access to a tfds dataset's records in the shards' form (a grain data source).

  kind: 'text', 'image' or 'pair' (what check_example expects); feature_map: {ours: theirs};
  tokenizer: tokenizes captions and texts stored as text; process_index / process_count: read
  only this host's share (tfds.split_for_jax_process), marked by `per_host`.
  """

  def __init__(self, path, kind, *, data_dir="", feature_map=None, tokenizer=None,
               default_split="train", process_index=None, process_count=None):
    import tensorflow_datasets as tfds
    self.path, self.kind, self.tokenizer = path, kind, tokenizer
    self.name, self.split = parse_tfds_path(path, default_split)
    self.feature_map = dict(feature_map or {})
    self.per_host = process_count is not None
    split = self.split
    if self.per_host:
      split = tfds.split_for_jax_process(split, process_index=process_index,
                                         process_count=process_count)
    try:
      builder = tfds.builder(self.name, data_dir=data_dir or None)
      self._source = tfds.data_source(self.name, split=split, data_dir=data_dir or None,
                                      decoders=self._decoders(builder.info.features))
    except Exception as e:  # not registered, not prepared, unknown split, not array_record
      raise DataError(f"{path}: cannot open the tfds dataset {self.name!r} split {self.split!r} "
                      f"in {data_dir or 'the default data dir'} ({_reason(e, self.name)}); "
                      "expected one prepared with file_format='array_record'") from None
    self.meta = self._metadata(builder.info)

  def _decoders(self, features):
    """Image features that become image_bytes are read as their encoded bytes."""
    import tensorflow_datasets as tfds
    paths = [theirs for ours, theirs in self.feature_map.items() if ours == IMAGE_FIELD]
    if IMAGE_FIELD in features and IMAGE_FIELD not in self.feature_map:
      paths.append(IMAGE_FIELD)
    decoders = {}
    for path in paths:
      _merge(decoders, _nested(path, tfds.decode.SkipDecoding()))
    return decoders or None

  def _metadata(self, info) -> dict:
    meta = metadata_of(info, self.feature_map)
    meta.update(kind=self.kind, num_records=len(self))
    return meta

  def __len__(self):
    return len(self._source)

  def __repr__(self):
    return f"TfdsSource({self.path!r}, kind={self.kind!r}, records={len(self)})"

  def __getitem__(self, index):
    index = int(index)
    where = f"{self.path} record {index}"
    if not 0 <= index < len(self):
      raise IndexError(f"{where}: out of range [0, {len(self)})")
    try:
      raw = self._source[index]
    except Exception as e:
      raise DataError(f"{where}: cannot read ({type(e).__name__}: {e})") from None
    record = self.to_record(raw, where)
    check_example(record, self.kind, self.meta, where)
    return record

  def to_record(self, raw: dict, where: str) -> dict:
    renamed = {theirs.split("/")[0] for theirs in self.feature_map.values()}
    record = {k: v for k, v in raw.items() if k not in renamed}
    for ours, theirs in self.feature_map.items():
      record[ours] = _walk(raw, theirs, where)
    record = {k: _normalise(k, v) for k, v in record.items()}
    for text, ids in (("caption", "caption_ids"), ("text", "input_ids")):
      if ids not in record and isinstance(record.get(text), str):
        if self.tokenizer is None:
          raise DataError(f"{where}: {text!r} is text and there is no {ids!r}; tokenizing it "
                          "needs data.tokenizer")
        record[ids] = self.tokenizer.encode(record[text])
    return record


def metadata_of(info, feature_map) -> dict:
  """The shards' metadata fields of a tfds dataset: the builder's metadata (ours write
  region_feature_dim, num_classes, task, skipped), else the dims from the feature shapes."""
  meta = dict(info.metadata or {})
  meta["format"] = PREFIX
  for ours, key in (("region_features", "region_feature_dim"), ("class_probs", "num_classes")):
    feature = info.features
    try:
      for part in feature_map.get(ours, ours).split("/"):
        feature = feature[part]
      dim = feature.shape[-1]
    except (KeyError, TypeError, AttributeError, IndexError):
      continue
    if dim:
      meta.setdefault(key, int(dim))
  return meta


def read_tfds_metadata(path, data_cfg=None) -> dict:
  """metadata_of a tfds:... dataset (no records read); DataError where it is not prepared."""
  import tensorflow_datasets as tfds
  name, _ = parse_tfds_path(path, "train")
  data_dir = getattr(data_cfg, "tfds_data_dir", "") or None
  try:
    info = tfds.builder(name, data_dir=data_dir).info
  except Exception as e:
    raise DataError(f"{path}: cannot open the tfds dataset {name!r} in "
                    f"{data_dir or 'the default data dir'} ({_reason(e, name)})") from None
  return metadata_of(info, parse_feature_map(getattr(data_cfg, "tfds_features", "")))


def open_records(path, kind, data_cfg=None, *, tokenizer=None, default_split="train",
                 process_index=None, process_count=None):
  """A dataset directory (ShardSource) or a tfds:... name (TfdsSource) as a record source."""
  from unimo_jax.data.formats.records import ShardSource
  if not is_tfds(path):
    return ShardSource(path)
  return TfdsSource(path, kind, data_dir=getattr(data_cfg, "tfds_data_dir", ""),
                    feature_map=parse_feature_map(getattr(data_cfg, "tfds_features", "")),
                    tokenizer=tokenizer, default_split=default_split,
                    process_index=process_index, process_count=process_count)


def _reason(error: Exception, name: str) -> str:
  """Why tfds could not open `name`, in one line: for a name tfds does not know, the registered
  names closest to it (tfds's own message lists its whole catalogue)."""
  import difflib
  import tensorflow_datasets as tfds
  if type(error).__name__ == "DatasetNotFoundError":
    base = name.split("/")[0].split(":")[0]
    close = difflib.get_close_matches(base, tfds.list_builders(with_community_datasets=False),
                                      n=5, cutoff=0.6)
    return (f"no dataset of that name is registered; the closest: {', '.join(close)}" if close
            else "no dataset of that name is registered, nor one close to it")
  first = str(error).strip().splitlines()
  return f"{type(error).__name__}: {first[0][:300] if first else ''}"
