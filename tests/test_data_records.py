"""Shard format: round trips, metadata, and bad shards named by file and record."""

import json

import numpy as np
import pytest

from data_fixtures import DIM, image_example, write_datasets
from unimo_jax.data.formats.records import (DataError, ShardSource, decode_example, encode_example,
                                    read_metadata, write_examples)


def test_round_trip_every_kind(tmp_path):
  root = write_datasets(tmp_path)
  pairs = ShardSource(root / "pair")
  assert len(pairs) == 32 and pairs.kind == "pair"
  meta = read_metadata(root / "pair")
  assert [s["records"] for s in meta["shards"]] == [10, 10, 10, 2]
  assert meta["num_records"] == 32 and meta["region_feature_dim"] == DIM
  record = pairs[13]
  assert record["region_features"].dtype == np.float16  # stored compactly
  assert record["image_id"] == "img-113" and record["boxes"].shape == (2 + 13 % 3, 4)
  assert len(record["hard_negative_ids"]) == 13 % 3 and len(record["paraphrase_ids"]) == 1
  assert pairs.locate(13) == (1, 3)
  text = ShardSource(root / "text")
  np.testing.assert_array_equal(text[39]["input_ids"], np.full(5 + 39 % 7, 49))


def test_codec_keeps_values_exactly():
  rng = np.random.default_rng(0)
  ex = dict(image_example(rng, 0), ragged=[np.arange(3), np.arange(0)], empty=[], n=3, s="x")
  back = decode_example(encode_example(ex))
  for key in ("region_features", "boxes", "class_probs"):
    np.testing.assert_array_equal(back[key], ex[key])
  assert [list(a) for a in back["ragged"]] == [[0, 1, 2], []] and back["empty"] == []
  assert back["n"] == 3 and back["s"] == "x"


def test_truncated_shard_names_the_file(tmp_path):
  root = write_datasets(tmp_path)
  shard = root / "pair" / read_metadata(root / "pair")["shards"][1]["file"]
  shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
  source = ShardSource(root / "pair")
  assert source[3]["image_id"] == "img-103"  # other shards still read
  with pytest.raises(DataError, match=str(shard.name)):
    source[12]


def test_corrupt_record_and_wrong_dimension_name_the_record(tmp_path):
  from array_record.python import array_record_module as arm
  root = tmp_path / "bad"
  write_examples(root, "image", [image_example(np.random.default_rng(0), i) for i in range(3)],
                 region_feature_dim=DIM)
  meta = read_metadata(root)
  path = root / meta["shards"][0]["file"]
  good = [ShardSource(root)._reader(0).read([i])[0] for i in range(3)]
  writer = arm.ArrayRecordWriter(str(path), "group_size:1")
  bad_dim = image_example(np.random.default_rng(1), 9)
  bad_dim["region_features"] = np.zeros((3, DIM + 1), np.float16)
  for data in (good[0], b"\x93not a dict", encode_example(bad_dim)):
    writer.write(data)
  writer.close()
  source = ShardSource(root)
  assert source[0]["image_id"] == "img-0"
  with pytest.raises(DataError, match=rf"{path.name} record 1: cannot decode"):
    source[1]
  with pytest.raises(DataError, match=rf"{path.name} record 2: region_features: expected shape "
                                      rf"\[boxes, {DIM}\], found \[3, {DIM + 1}\]"):
    source[2]


def test_writer_rejects_bad_examples_and_metadata_is_checked(tmp_path):
  with pytest.raises(DataError, match="example 0: region_features: expected shape"):
    write_examples(tmp_path / "w", "image",
                   [dict(image_example(np.random.default_rng(0), 0), region_features=np.zeros((3, 5)))],
                   region_feature_dim=DIM)
  with pytest.raises(DataError, match="missing field 'caption_ids'"):
    write_examples(tmp_path / "p", "pair", [image_example(np.random.default_rng(0), 0)])
  with pytest.raises(DataError, match="metadata.json: not found"):
    ShardSource(tmp_path / "nowhere")
  root = write_datasets(tmp_path / "ok")
  meta = json.loads((root / "text" / "metadata.json").read_text())
  meta["shards"][0]["records"] = 11
  (root / "text" / "metadata.json").write_text(json.dumps(meta))
  with pytest.raises(DataError, match="metadata says 11 records, file holds 10"):
    ShardSource(root / "text")[0]
