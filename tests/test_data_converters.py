"""Converters on small files in the real layouts, and their bad-input errors."""

import json

import numpy as np
import pytest

from data_fixtures import DETECTOR_CLASSES as C
from data_fixtures import DETECTOR_DIM as D
from data_fixtures import b64, detector_fields, write_bua_tsv
from unimo_jax.data.formats import converters
from unimo_jax.data.__main__ import main as data_cli
from unimo_jax.data.formats.records import ShardSource
from unimo_jax.errors import DataError
from unimo_jax.data.formats.tokenizers import SentencePieceTokenizer


@pytest.fixture(scope="module")
def tokenizer():
  lines = ["a dog runs on the grass", "two cats sleep on a red sofa", "a man rides a bike"] * 30
  return SentencePieceTokenizer.train(lines, vocab_size=60, model_type="word")


def test_text_corpus_line_and_blank_line_modes(tmp_path, tokenizer):
  (tmp_path / "c.txt").write_text("a dog runs on the grass\n\ntwo cats sleep\non a red sofa\n\n")
  meta = converters.convert_text_corpus([tmp_path / "c.txt"], tmp_path / "lines", tokenizer)
  assert meta["num_records"] == 3
  meta = converters.convert_text_corpus([tmp_path / "c.txt"], tmp_path / "docs", tokenizer,
                                        blank_line_separated=True, segment_length=4)
  docs = ShardSource(tmp_path / "docs")
  full = tokenizer.encode("two cats sleep on a red sofa")
  got = np.concatenate([docs[i]["input_ids"] for i in range(len(docs))])
  np.testing.assert_array_equal(got, np.concatenate([tokenizer.encode("a dog runs on the grass"),
                                                     full]))
  assert max(len(docs[i]["input_ids"]) for i in range(len(docs))) <= 4
  (tmp_path / "empty.txt").write_text("\n  \n")
  with pytest.raises(DataError, match="expected documents, found none"):
    converters.convert_text_corpus([tmp_path / "empty.txt"], tmp_path / "e", tokenizer)


def test_bottom_up_tsv_with_and_without_class_probs(tmp_path):
  truth = write_bua_tsv(tmp_path / "f.tsv", [("1", 3, True), ("2", 1, True)])
  meta = converters.convert_bottom_up_tsv([tmp_path / "f.tsv"], tmp_path / "img", feature_dim=D,
                                          num_classes=C)
  source = ShardSource(tmp_path / "img")
  assert meta["num_records"] == 2 and source[0]["image_w"] == 100 and source[0]["image_h"] == 80
  np.testing.assert_allclose(source[0]["boxes"], truth["1"][0], rtol=1e-6)
  np.testing.assert_allclose(source[0]["region_features"], truth["1"][1], atol=2e-3)  # float16
  np.testing.assert_allclose(source[1]["class_probs"], truth["2"][2], atol=1e-3)
  write_bua_tsv(tmp_path / "g.tsv", [("3", 2, False)])
  converters.convert_bottom_up_tsv([tmp_path / "g.tsv"], tmp_path / "img2", feature_dim=D)
  assert "class_probs" not in ShardSource(tmp_path / "img2")[0]


def test_bottom_up_tsv_bad_rows(tmp_path):
  write_bua_tsv(tmp_path / "f.tsv", [("1", 2, True), ("2", 2, True), ("3", 2, True)])
  lines = (tmp_path / "f.tsv").read_text().splitlines()
  lines[1] = "\t".join(lines[1].split("\t")[:4])  # 4 fields
  lines[2] = lines[2].replace(lines[2].split("\t")[5], "not*base64!")
  (tmp_path / "bad.tsv").write_text("\n".join(lines) + "\n")
  with pytest.raises(DataError, match=r"bad.tsv line 2: expected 6 or 7 tab-separated fields"):
    converters.convert_bottom_up_tsv([tmp_path / "bad.tsv"], tmp_path / "o1", feature_dim=D)
  meta = converters.convert_bottom_up_tsv([tmp_path / "bad.tsv"], tmp_path / "o2", feature_dim=D,
                                          skip_bad=True)
  assert meta["num_records"] == 1 and meta["skipped"] == 2
  (tmp_path / "b64.tsv").write_text(lines[2] + "\n")
  with pytest.raises(DataError, match=r"b64.tsv line 1: field 'features' is not valid base64"):
    converters.convert_bottom_up_tsv([tmp_path / "b64.tsv"], tmp_path / "o3", feature_dim=D)
  with pytest.raises(DataError, match=r"line 1: field 'features': expected 2 x 7 float32 values, "
                                      r"found 12"):
    converters.convert_bottom_up_tsv([tmp_path / "f.tsv"], tmp_path / "o4", feature_dim=7)


def test_coco_captions_and_caption_without_features(tmp_path, tokenizer):
  write_bua_tsv(tmp_path / "f.tsv", [("11", 2, True), ("12", 3, True)])
  captions = {"images": [{"id": 11}, {"id": 12}], "annotations": [
      {"image_id": 11, "id": 1, "caption": "a dog runs on the grass"},
      {"image_id": 12, "id": 2, "caption": "two cats sleep"},
      {"image_id": 99, "id": 3, "caption": "a man rides a bike"}]}
  (tmp_path / "c.json").write_text(json.dumps(captions))
  with pytest.raises(DataError, match=r"c.json annotation 2: caption for image 99, which has no "
                                      r"features"):
    converters.convert_coco_captions(tmp_path / "c.json", tmp_path / "f.tsv", tmp_path / "p",
                                     tokenizer, feature_dim=D)
  meta = converters.convert_coco_captions(tmp_path / "c.json", tmp_path / "f.tsv", tmp_path / "p",
                                          tokenizer, feature_dim=D, skip_bad=True)
  assert meta["num_records"] == 2 and meta["skipped"] == 1
  pair = ShardSource(tmp_path / "p")[1]
  assert pair["image_id"] == "12" and pair["region_features"].shape == (3, D)
  np.testing.assert_array_equal(pair["caption_ids"], tokenizer.encode("two cats sleep"))


def test_unimo_flickr30k(tmp_path):
  rng = np.random.default_rng(1)
  rows = []
  for name, n in (("100.jpg", 2), ("200.jpg", 4)):
    boxes, feats, probs = detector_fields(rng, n)
    rows.append("\t".join([name, "500", "375", str(n), b64(boxes), b64(feats), b64(probs)]))
  (tmp_path / "bbox100.tsv").write_text("\n".join(rows) + "\n")
  (tmp_path / "test.ids").write_text("0 31 45 2;0 0 0 0;0 1 2 3;200.jpg;7\n"
                                     "0 8 9 10 2;0 0 0 0 0;0 1 2 3 4;100.jpg;8\n")
  meta = converters.convert_flickr30k(tmp_path / "test.ids", [tmp_path / "bbox100.tsv"],
                                      tmp_path / "out", feature_dim=D)
  source = ShardSource(tmp_path / "out")
  assert meta["task"] == "flickr30k" and len(source) == 2
  np.testing.assert_array_equal(source[0]["caption_ids"], [31, 45])  # [CLS] / [SEP] stripped
  assert source[0]["image_id"] == "200.jpg" and source[0]["region_features"].shape == (4, D)
  assert source[1]["caption_id"] == "8" and source[0]["image_w"] == 500
  (tmp_path / "bad.ids").write_text("0 31 2;0 0 0;0 1 2;300.jpg;1\n0 31 2;0 0 0;200.jpg\n")
  with pytest.raises(DataError, match=r"bad.ids line 1: caption for image '300.jpg'"):
    converters.convert_flickr30k(tmp_path / "bad.ids", [tmp_path / "bbox100.tsv"],
                                 tmp_path / "o", feature_dim=D)
  meta = converters.convert_flickr30k(tmp_path / "bad.ids", [tmp_path / "bbox100.tsv"],
                                      tmp_path / "o2", feature_dim=D, skip_bad=True)
  assert meta["skipped"] == 2 and meta["num_records"] == 0


def test_unimo_snli_ve_and_coco_records(tmp_path):
  rng = np.random.default_rng(2)
  boxes, feats, probs = detector_fields(rng, 3)
  snli = ["1234.jpg", "d1", "2", "0 15 16 2", "0 0 0 0", "0 1 2 3", "", "640", "480", "3",
          b64(boxes), b64(feats), "", ""]
  (tmp_path / "snli.txt").write_text(";".join(snli) + "\n")
  converters.convert_snli_ve([tmp_path / "snli.txt"], tmp_path / "ve", feature_dim=D)
  ve = ShardSource(tmp_path / "ve")[0]
  assert ve["label"] == 2 and (ve["image_w"], ve["image_h"]) == (640, 480)
  np.testing.assert_array_equal(ve["caption_ids"], [15, 16])
  coco = ["COCO_val_42", "c7", "0 20 21 2", "0 0 0 0", "0 1 2 3", "", "", "", "480", "640", "3",
          b64(boxes), b64(probs), "", b64(feats), ""]
  (tmp_path / "coco.txt").write_text(";".join(coco) + "\n")
  converters.convert_coco_unimo([tmp_path / "coco.txt"], tmp_path / "cc", feature_dim=D,
                                num_classes=C)
  cc = ShardSource(tmp_path / "cc")[0]
  assert cc["image_id"] == "42"  # image_id[9:]
  assert (cc["image_w"], cc["image_h"]) == (640, 480)  # h comes before w in these records
  np.testing.assert_allclose(cc["class_probs"], probs, atol=1e-3)
  (tmp_path / "objects.ids").write_text("COCO_val_42;0 30 31 32 2;0 0 0 0 0;0 1 2 3 4\n")
  converters.convert_coco_unimo([tmp_path / "coco.txt"], tmp_path / "ct", feature_dim=D,
                                num_classes=C, objects=tmp_path / "objects.ids")
  np.testing.assert_array_equal(ShardSource(tmp_path / "ct")[0]["tag_ids"], [30, 31, 32])
  (tmp_path / "other.ids").write_text("COCO_val_7;0 30 2;0 0 0;0 1 2\n")
  with pytest.raises(DataError, match=r"coco.txt line 1: image 'COCO_val_42' has no line in the "
                                      r"object file"):
    converters.convert_coco_unimo([tmp_path / "coco.txt"], tmp_path / "cx", feature_dim=D,
                                  objects=tmp_path / "other.ids")
  (tmp_path / "short.txt").write_text(";".join(coco[:10]) + "\n")
  with pytest.raises(DataError, match=r"short.txt line 1: expected 16 ';'-separated fields"):
    converters.convert_coco_unimo([tmp_path / "short.txt"], tmp_path / "x", feature_dim=D)


def test_command_line(tmp_path, tokenizer, capsys):
  write_bua_tsv(tmp_path / "f.tsv", [("1", 2, True)])
  assert data_cli(["bua-tsv", str(tmp_path / "f.tsv"), "--out", str(tmp_path / "img"),
                   "--feature-dim", str(D)]) == 0
  assert "wrote 1 image records" in capsys.readouterr().out
  assert data_cli(["inspect", str(tmp_path / "img")]) == 0
  assert "region_features: float16[2, 6]" in capsys.readouterr().out
  (tmp_path / "bad.tsv").write_text("1\t2\n")
  assert data_cli(["bua-tsv", str(tmp_path / "bad.tsv"), "--out", str(tmp_path / "o")]) == 2
  assert "bad.tsv line 1" in capsys.readouterr().err
