"""tfds datasets by name (array_record, no TensorFlow): split strings, per-host shares, feature
renaming, text tokenized and images decoded at read time, and the pretraining pipeline reading a
tfds dataset exactly as it reads the same records from shards."""

import importlib.util
import io
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from data_fixtures import (CLASSES, DIM, SPECIAL, VOCAB, small_data_config, trees_equal,
                           write_datasets)
from unimo_jax.data.formats.images import decode_image
from unimo_jax.data.pipeline.streams import make_pretraining_iterator
from unimo_jax.data.formats.records import ShardSource
from unimo_jax.errors import DataError
from unimo_jax.data.formats.tfds_source import TfdsSource, open_records, parse_tfds_path

RAGGED = ("paraphrase_ids", "hard_negative_ids")


def _ragged_feature():
  return {"values": tfds.features.Tensor(shape=(None,), dtype=np.int32),
          "lengths": tfds.features.Tensor(shape=(None,), dtype=np.int32)}


class FixturePairs(tfds.core.GeneratorBasedBuilder):
  """The data_fixtures pair shards (in manual_dir) as a tfds dataset with our feature names."""
  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = "manual_dir: a pair shard directory"

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image_id": tfds.features.Text(), "image_w": np.int64, "image_h": np.int64,
        "region_features": tfds.features.Tensor(shape=(None, DIM), dtype=np.float16),
        "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
        "class_probs": tfds.features.Tensor(shape=(None, CLASSES), dtype=np.float16),
        "caption_ids": tfds.features.Tensor(shape=(None,), dtype=np.int32),
        "retrieved_images": tfds.features.Tensor(shape=(None,), dtype=np.int64),
        **{name: _ragged_feature() for name in RAGGED}}), disable_shuffling=True)

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(dl_manager.manual_dir)}

  def _generate_examples(self, shard_dir):
    source = ShardSource(shard_dir)
    for i in range(len(source)):
      record = dict(source[i])
      for name in RAGGED:
        parts = record[name]
        record[name] = {"values": np.concatenate(parts).astype(np.int32) if parts else
                        np.zeros(0, np.int32),
                        "lengths": np.array([len(p) for p in parts], np.int32)}
      yield i, record


class PhotoCaptions(tfds.core.GeneratorBasedBuilder):
  """Images with several captions, under names that are not ours (as tfds catalogue data)."""
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "photo": tfds.features.Image(), "id": tfds.features.Text(),
        "captions": {"text": tfds.features.Sequence(tfds.features.Text())}}),
        disable_shuffling=True)

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i in range(12):
      buffer = io.BytesIO()
      Image.fromarray(photo(i)).save(buffer, "PNG")
      yield i, {"photo": buffer.getvalue(), "id": f"photo-{i}",
                "captions": {"text": [f"picture number {i}", "another caption"]}}


def photo(i):
  return np.full((6, 9, 3), 10 * i, np.uint8)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  root = tmp_path_factory.mktemp("tfds")
  shards = write_datasets(root / "shards")
  data_dir = root / "tfds"
  FixturePairs(data_dir=str(data_dir), file_format="array_record").download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(shards / "pair")))
  PhotoCaptions(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
  return shards, str(data_dir)


class WordTokenizer:
  """Ids from a fixed word list: enough to see that text was tokenized, and how."""
  words = ["picture", "number", "another", "caption"] + [str(i) for i in range(12)]

  def encode(self, text):
    return np.array([5 + self.words.index(w) for w in text.split()], np.int32)


def test_tensorflow_is_not_installed():
  assert importlib.util.find_spec("tensorflow") is None
  assert "tensorflow" not in sys.modules


def test_path_syntax():
  assert parse_tfds_path("tfds:coco/2017:1.0.0@train[:95%]", "train") == (
      "coco/2017:1.0.0", "train[:95%]")
  assert parse_tfds_path("tfds:coco", "validation") == ("coco", "validation")
  with pytest.raises(DataError, match="expected tfds:<name>"):
    parse_tfds_path("tfds:@train", "train")


def test_records_equal_the_shards_and_split_strings_select_exactly(prepared):
  shards, data_dir = prepared
  shard = ShardSource(shards / "pair")
  whole = TfdsSource("tfds:fixture_pairs", "pair", data_dir=data_dir)
  assert len(whole) == len(shard) == 32
  assert whole.meta["region_feature_dim"] == DIM and whole.meta["num_classes"] == CLASSES
  for i in (0, 5, 31):
    a, b = whole[i], shard[i]
    assert sorted(a) == sorted(b)
    for key in b:
      if key in RAGGED:
        assert len(a[key]) == len(b[key])
        assert all(np.array_equal(x, y) for x, y in zip(a[key], b[key]))
      else:
        np.testing.assert_array_equal(a[key], b[key])
        assert np.asarray(a[key]).dtype == np.asarray(b[key]).dtype
  sliced = TfdsSource("tfds:fixture_pairs@train[10:14]", "pair", data_dir=data_dir)
  assert [sliced[i]["image_id"] for i in range(len(sliced))] == [
      f"img-{100 + i}" for i in range(10, 14)]
  percent = TfdsSource("tfds:fixture_pairs:1.0.0@train[75%:]", "pair", data_dir=data_dir)
  assert [percent[i]["image_id"] for i in range(len(percent))] == [
      f"img-{100 + i}" for i in range(24, 32)]


def test_per_host_shares_are_disjoint_and_complete(prepared):
  _, data_dir = prepared
  shares = [TfdsSource("tfds:fixture_pairs@train[2:]", "pair", data_dir=data_dir,
                       process_index=p, process_count=3) for p in range(3)]
  ids = [[s[i]["image_id"] for i in range(len(s))] for s in shares]
  assert [len(x) for x in ids] == [10, 10, 10]
  flat = [x for share in ids for x in share]
  assert sorted(flat) == sorted(f"img-{100 + i}" for i in range(2, 32))  # disjoint, complete


def test_renamed_features_text_tokenized_and_images_decoded_with_pillow(prepared):
  _, data_dir = prepared
  source = TfdsSource("tfds:photo_captions", "pair", data_dir=data_dir,
                      feature_map={"caption": "captions/text", "image_bytes": "photo",
                                   "image_id": "id"}, tokenizer=WordTokenizer())
  record = source[7]
  assert record["image_id"] == "photo-7"
  assert record["caption"] == "picture number 7"  # an image's first caption
  np.testing.assert_array_equal(record["caption_ids"], [5, 6, 5 + 4 + 7])
  assert isinstance(record["image_bytes"], bytes)  # undecoded by tfds ...
  np.testing.assert_array_equal(decode_image(record["image_bytes"], "x"), photo(7))  # ... Pillow
  with pytest.raises(DataError, match="tokenizing it needs data.tokenizer"):
    TfdsSource("tfds:photo_captions", "pair", data_dir=data_dir,
               feature_map={"caption": "captions/text", "image_bytes": "photo"})[0]
  with pytest.raises(DataError, match="names feature 'captions/words', not in the record"):
    TfdsSource("tfds:photo_captions", "pair", data_dir=data_dir,
               feature_map={"caption": "captions/words", "image_bytes": "photo"},
               tokenizer=WordTokenizer())[0]


def test_unknown_dataset_is_named(prepared):
  _, data_dir = prepared
  with pytest.raises(DataError, match="cannot open the tfds dataset 'no_such_set'"):
    open_records("tfds:no_such_set", "pair", None)


def test_pipeline_reads_tfds_as_it_reads_shards_and_resumes(prepared):
  shards, data_dir = prepared
  sizes = {"text": 4, "image": 4, "pair": 4}

  def iterator(pair_dir):
    cfg = small_data_config(shards)
    cfg.pair_dir, cfg.tfds_data_dir = pair_dir, data_dir
    return make_pretraining_iterator(cfg, sizes, SPECIAL, VOCAB, process_index=0,
                                     process_count=1)

  from_shards, from_tfds = iterator(str(shards / "pair")), iterator("tfds:fixture_pairs")
  for _ in range(10):  # past an epoch of the 32 pairs: the same records, in the same order
    assert trees_equal(next(from_shards), next(from_tfds))
  state = from_tfds.get_state()
  expected = [next(from_tfds) for _ in range(3)]
  resumed = iterator("tfds:fixture_pairs")
  resumed.set_state(state)
  for batch in expected:
    assert trees_equal(next(resumed), batch)
