"""tfds builders (data/formats/tfds_builders.py) prepared from small files in the real layouts, read back
through tfds.data_source (our TfdsSource) with values equal to the files; bad files named or
counted; the command line; a VQA fine-tune from a tfds build trains exactly as from shards."""

import gzip
import io
import json

import numpy as np
import pytest
from PIL import Image

from data_fixtures import DETECTOR_CLASSES as C
from data_fixtures import DETECTOR_DIM as D
from data_fixtures import (VQA_FILES, b64, detector_fields, regions_tsv, write_bua_tsv,
                           write_vqa)
from unimo_jax.data.formats import tfds_builders
from unimo_jax.data.__main__ import main as data_cli
from unimo_jax.data.pipeline.examples import data_config
from unimo_jax.data.formats.images import decode_image
from unimo_jax.errors import DataError
from unimo_jax.data.formats.tfds_source import open_records
from unimo_jax.data.formats.tokenizers import SentencePieceTokenizer


@pytest.fixture(scope="module")
def tokenizer():
  lines = ["a dog runs on the grass", "two cats sleep on a red sofa", "what colour is the cat",
           "a man rides a bike", "is there a dog"] * 30
  return SentencePieceTokenizer.train(lines, vocab_size=70, model_type="word")


def build(tmp_path, name, manual, **kwargs):
  data_dir = tmp_path / "tfds"
  builder = tfds_builders.build(name, manual, data_dir, **kwargs)
  return builder, data_dir


def read(data_dir, name, split, kind="pair", tokenizer=None):
  cfg = data_config()
  cfg.tfds_data_dir = str(data_dir)
  source = open_records(f"tfds:{name}@{split}", kind, cfg, tokenizer=tokenizer)
  return source, [source[i] for i in range(len(source))]


def image_bytes(mode, size, fmt):
  rng = np.random.default_rng(sum(size))
  channels = {"RGB": 3, "L": 1, "RGBA": 4, "CMYK": 4}[mode]
  array = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
  image = Image.fromarray(array[..., 0] if channels == 1 else array, mode)
  out = io.BytesIO()
  image.save(out, fmt)
  return out.getvalue()


def test_text_corpus_lines_and_paragraphs_with_split_folders(tmp_path, tokenizer):
  manual = tmp_path / "corpus"
  (manual / "train").mkdir(parents=True)
  (manual / "validation").mkdir()
  (manual / "train" / "a.txt").write_text("a dog runs on the grass\n\ntwo cats sleep\n")
  with gzip.open(manual / "train" / "b.txt.gz", "wt") as f:
    f.write("a man rides\na bike\n")
  (manual / "validation" / "c.txt").write_text("is there a dog\n")
  builder, data_dir = build(tmp_path, "unimo_text_corpus/lines", manual)
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 4,
                                                                         "validation": 1}
  _, train = read(data_dir, "unimo_text_corpus/lines", "train", "text", tokenizer)
  assert [r["text"] for r in train] == ["a dog runs on the grass", "two cats sleep", "a man rides",
                                        "a bike"]
  np.testing.assert_array_equal(train[1]["input_ids"], tokenizer.encode("two cats sleep"))
  build(tmp_path, "unimo_text_corpus/paragraphs", manual)
  _, docs = read(data_dir, "unimo_text_corpus/paragraphs", "train", "text", tokenizer)
  assert [r["text"] for r in docs] == ["a dog runs on the grass", "two cats sleep",
                                       "a man rides a bike"]


def test_bottom_up_regions_and_class_probs_equal_the_tsv(tmp_path):
  manual = tmp_path / "bua"
  manual.mkdir()
  truth = write_bua_tsv(manual / "f.tsv", [("1", 3, True), ("2", 1, True), ("3", 2, True)])
  for config, probs in (("regions", False), ("regions_probs", True)):
    _, data_dir = build(tmp_path, f"unimo_bottom_up/{config}", manual)
    source, rows = read(data_dir, f"unimo_bottom_up/{config}", "train", "image")
    assert source.meta["region_feature_dim"] == D and len(rows) == 3
    assert (source.meta.get("num_classes") == C) == probs
    for row in rows:
      boxes, feats, class_probs = truth[row["image_id"]]
      np.testing.assert_array_equal(row["boxes"], boxes.astype(np.float32))
      np.testing.assert_array_equal(row["region_features"], feats.astype(np.float16))
      assert (row["image_w"], row["image_h"]) == (100, 80)
      assert ("class_probs" in row) == probs
      if probs:
        np.testing.assert_array_equal(row["class_probs"], class_probs.astype(np.float16))
    _, part = read(data_dir, f"unimo_bottom_up/{config}", "train[1:3]", "image")
    assert [r["image_id"] for r in part] == ["2", "3"]


def test_bottom_up_rows_without_probs_are_named_or_counted(tmp_path):
  manual = tmp_path / "bua"
  manual.mkdir()
  write_bua_tsv(manual / "f.tsv", [("1", 2, True), ("2", 2, False), ("3", 2, True)])
  with pytest.raises(DataError, match=r"f.tsv image 2: expected a cls_prob field"):
    build(tmp_path, "unimo_bottom_up/regions_probs", manual)
  builder, data_dir = build(tmp_path / "skip", "unimo_bottom_up/regions_probs", manual,
                            skip_bad=True)
  assert builder.info.splits["train"].num_examples == 2
  source, _ = read(data_dir, "unimo_bottom_up/regions_probs", "train", "image")
  assert source.meta["skipped"] == {"train": 1}


def karpathy_file(path, splits):
  images = []
  for i, split in enumerate(splits):
    images.append({"split": split, "filepath": "val2014" if i % 2 else "train2014",
                   "filename": f"COCO_{i}.{'png' if i % 2 else 'jpg'}", "cocoid": 100 + i,
                   "sentences": [{"raw": f"a dog runs {i} ", "sentid": 10 * i},
                                 {"raw": f"two cats sleep {i}", "sentid": 10 * i + 1}]})
  path.write_text(json.dumps({"images": images, "dataset": "coco"}))
  return images


def test_coco_karpathy_regions_splits_and_captions(tmp_path, tokenizer):
  manual = tmp_path / "coco"
  manual.mkdir()
  images = karpathy_file(manual / "dataset_coco.json",
                         ["train", "restval", "val", "test", "train"])
  truth = write_bua_tsv(manual / "features.tsv", [(str(100 + i), 1 + i % 3, False)
                                                  for i in reversed(range(5))])
  builder, data_dir = build(tmp_path, "unimo_coco_karpathy/regions", manual)
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      "train": 6, "validation": 2, "test": 2}
  _, train = read(data_dir, "unimo_coco_karpathy/regions", "train", tokenizer=tokenizer)
  # Rows stream in the TSV's order (image 104 first), each image's captions in order.
  assert [r["image_id"] for r in train] == ["104", "104", "101", "101", "100", "100"]
  assert [r["caption_id"] for r in train[:2]] == ["40", "41"]
  assert train[0]["caption"] == "a dog runs 4"  # stripped
  np.testing.assert_array_equal(train[1]["caption_ids"], tokenizer.encode("two cats sleep 4"))
  np.testing.assert_array_equal(train[2]["region_features"],
                                truth["101"][1].astype(np.float16))
  _, val = read(data_dir, "unimo_coco_karpathy/regions", "validation", tokenizer=tokenizer)
  assert {r["image_id"] for r in val} == {"102"} and len(images) == 5


def test_coco_karpathy_pixels_with_a_corrupt_image(tmp_path, tokenizer):
  manual = tmp_path / "coco"
  images = karpathy_file((manual.mkdir() or manual) / "dataset_coco.json",
                         ["train", "train", "val", "test"])
  files = {}
  for i, image in enumerate(images):
    folder = manual / image["filepath"]
    folder.mkdir(exist_ok=True)
    mode, fmt = (("RGB", "JPEG"), ("L", "PNG"), ("RGBA", "PNG"), ("CMYK", "JPEG"))[i]
    data = image_bytes(mode, (20 + i, 16), fmt)
    files[str(100 + i)] = data
    (folder / image["filename"]).write_bytes(data)
  (manual / images[1]["filepath"] / images[1]["filename"]).write_bytes(files["101"][:40])
  with pytest.raises(DataError, match=r"COCO_1.png"):
    build(tmp_path, "unimo_coco_karpathy/pixels", manual)
  builder, data_dir = build(tmp_path / "skip", "unimo_coco_karpathy/pixels", manual,
                            skip_bad=True)
  source, train = read(data_dir, "unimo_coco_karpathy/pixels", "train", tokenizer=tokenizer)
  assert [r["image_id"] for r in train] == ["100", "100"]  # the truncated 101 is skipped
  assert source.meta["skipped"]["train"] == 1
  assert bytes(train[0]["image_bytes"]) == files["100"]
  _, test = read(data_dir, "unimo_coco_karpathy/pixels", "test", tokenizer=tokenizer)
  pixels = decode_image(bytes(test[0]["image_bytes"]), "cmyk")
  assert pixels.shape == (16, 23, 3) and pixels.dtype == np.uint8


def unimo_region_fields(rng, n):
  boxes, feats, probs = detector_fields(rng, n)
  return boxes, feats, probs, [str(n), b64(boxes), b64(feats)]


def test_unimo_flickr30k_layout(tmp_path):
  data = tmp_path / "data"
  texts = data / "Flickr30k" / "flickr30k-textids"
  texts.mkdir(parents=True)
  rng = np.random.default_rng(3)
  truth = {}
  for split, folder, ids in (("train", "train", "train.ids"), ("validation", "dev", "val.all.ids"),
                             ("test", "test", "test.all.ids")):
    feature_dir = data / "Flickr30k" / "flickr30k-features" / "bbox100" / folder
    feature_dir.mkdir(parents=True)
    rows = []
    for k in range(2):
      name = f"{split}{k}.jpg"
      boxes, feats, probs, fields = unimo_region_fields(rng, 2 + k)
      rows.append("\t".join([name, "500", "375"] + fields + [b64(probs)]))
      truth[name] = (boxes, feats, probs)
    (feature_dir / "part-00000").write_text("\n".join(rows) + "\n")
    (texts / ids).write_text(f"0 31 45 2;0 0 0 0;0 1 2 3;{split}1.jpg;{split}-7\n"
                             f"0 8 9 10 2;0 0 0 0 0;0 1 2 3 4;{split}0.jpg;{split}-8\n")
  builder, data_dir = build(tmp_path, "unimo_flickr30k", data)
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      "train": 2, "validation": 2, "test": 2}
  source, rows = read(data_dir, "unimo_flickr30k", "validation")
  assert source.meta["task"] == "flickr30k" and source.meta["num_classes"] == C
  np.testing.assert_array_equal(rows[0]["caption_ids"], [31, 45])  # [CLS] / [SEP] stripped
  assert rows[0]["image_id"] == "validation1.jpg" and rows[1]["caption_id"] == "validation-8"
  boxes, feats, probs = truth["validation1.jpg"]
  np.testing.assert_array_equal(rows[0]["region_features"], feats.astype(np.float16))
  np.testing.assert_array_equal(rows[0]["class_probs"], probs.astype(np.float16))


def test_unimo_snli_ve_through_file_lists(tmp_path):
  data = tmp_path / "data"
  lists = data / "SNLI-VE" / "bbox100"
  rng = np.random.default_rng(4)
  expected = {}
  for split, name in (("train", "train"), ("validation", "dev"), ("test", "test")):
    (lists / name).mkdir(parents=True)
    entries = []
    for part in range(2):
      lines = []
      for k in range(2):
        boxes, feats, _, fields = unimo_region_fields(rng, 3)
        label = (part + k) % 3
        lines.append(";".join([f"{name}{part}{k}.jpg", f"{name}-{part}-{k}", str(label),
                               "0 15 16 2", "0 0 0 0", "0 1 2 3", "", "640", "480"] + fields
                              + ["", ""]))
        expected.setdefault(split, []).append((label, feats))
      file = lists / name / (f"part-{part}" + ("" if part == 0 else ".gz"))
      if part == 0:
        file.write_text("\n".join(lines) + "\n")
      else:
        with gzip.open(file, "wt") as f:
          f.write("\n".join(lines) + "\n")
      entries.append(f"./data/SNLI-VE/bbox100/{name}/{file.name}")  # as UNIMO's lists name them
    (lists / f"{name}_filelist").write_text("\n".join(entries) + "\n")
  _, data_dir = build(tmp_path, "unimo_snli_ve", data)
  for split in ("train", "validation", "test"):
    source, rows = read(data_dir, "unimo_snli_ve", split)
    assert [r["label"] for r in rows] == [label for label, _ in expected[split]]
    for row, (_, feats) in zip(rows, expected[split]):
      np.testing.assert_array_equal(row["region_features"], feats.astype(np.float16))
      np.testing.assert_array_equal(row["caption_ids"], [15, 16])
  (lists / "dev_filelist").write_text("./data/SNLI-VE/bbox100/dev/missing\n")
  with pytest.raises(DataError, match=r"dev_filelist line 1: data file "
                                      r"'./data/SNLI-VE/bbox100/dev/missing' not found"):
    build(tmp_path / "again", "unimo_snli_ve", data)


def test_unimo_coco_captions_with_object_tags(tmp_path):
  coco = tmp_path / "data" / "coco"
  coco.mkdir(parents=True)
  rng = np.random.default_rng(5)
  objects = []
  for split in ("train", "valid", "test"):
    boxes, feats, probs, fields = unimo_region_fields(rng, 3)
    n, b, f = fields
    record = [f"COCO_val_{split}", "c7", "0 20 21 2", "0 0 0 0", "0 1 2 3", "", "", "", "480",
              "640", n, b, b64(probs), "", f, ""]
    (coco / f"{split}.txt").write_text(";".join(record) + "\n")
    (coco / f"{split}_filelist").write_text(f"./data/coco/{split}.txt\n")
    objects.append(f"COCO_val_{split};0 30 31 {len(split)} 2;0 0 0 0 0;0 1 2 3 4")
  (coco / "coco_object_0.35_tot.ids").write_text("\n".join(objects) + "\n")
  _, data_dir = build(tmp_path, "unimo_coco_captions", tmp_path / "data")
  source, rows = read(data_dir, "unimo_coco_captions", "validation")
  assert source.meta["task"] == "coco_caption" and len(rows) == 1
  assert rows[0]["image_id"] == "valid"  # image_id[9:], as UNIMO's reader
  assert (rows[0]["image_w"], rows[0]["image_h"]) == (640, 480)
  np.testing.assert_array_equal(rows[0]["tag_ids"], [30, 31, 5])
  np.testing.assert_array_equal(rows[0]["caption_ids"], [20, 21])


def test_vqa_v2_questions_answers_and_test_without_annotations(tmp_path, tokenizer):
  manual = tmp_path / "vqa"
  manual.mkdir()
  rng = np.random.default_rng(6)
  records = []
  for i in range(3):
    boxes, feats, _ = detector_fields(rng, 2 + i)
    image = {"image_id": str(500 + i), "image_w": 64, "image_h": 48, "boxes": boxes,
             "region_features": feats}
    for j in range(2):
      records.append(dict(image, caption=f"is there a dog {j}", caption_id=str(i * 10 + j),
                          answers=["yes"] * (9 - j) + ["no"] * (1 + j)))
  write_vqa(manual, {"train": records[:4], "validation": records[4:],
                              "test": records[4:]})
  regions_tsv(manual / "features.tsv", records)
  builder, data_dir = build(tmp_path, "unimo_vqa_v2", manual)
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      "train": 4, "validation": 2, "test": 2}
  source, train = read(data_dir, "unimo_vqa_v2", "train", tokenizer=tokenizer)
  assert source.meta["task"] == "vqa"
  assert [r["caption_id"] for r in train] == ["0", "1", "10", "11"]
  assert train[1]["answers"] == ["yes"] * 8 + ["no"] * 2
  np.testing.assert_array_equal(train[2]["caption_ids"], tokenizer.encode("is there a dog 0"))
  np.testing.assert_array_equal(train[2]["region_features"],
                                records[2]["region_features"].astype(np.float16))
  _, test = read(data_dir, "unimo_vqa_v2", "test", tokenizer=tokenizer)
  assert [r["answers"] for r in test] == [[], []]
  questions = json.loads((manual / VQA_FILES["train"][0]).read_text())
  questions["questions"][0]["question_id"] = "999"  # no annotation
  (manual / VQA_FILES["train"][0]).write_text(json.dumps(questions))
  with pytest.raises(DataError, match=r"question 0: question 999 has no annotation"):
    build(tmp_path / "bad", "unimo_vqa_v2", manual)


def test_cc_tsv_and_img2dataset_folders(tmp_path, tokenizer):
  manual = tmp_path / "cc"
  (manual / "00000").mkdir(parents=True)
  kinds = [("RGB", "JPEG"), ("L", "PNG"), ("RGBA", "PNG"), ("CMYK", "JPEG")]
  files = {}
  for i, (mode, fmt) in enumerate(kinds):
    name = f"00000/{i:09d}.{'jpg' if fmt == 'JPEG' else 'png'}"
    files[name] = image_bytes(mode, (12 + i, 10), fmt)
    (manual / name).write_bytes(files[name])
    (manual / name).with_suffix(".txt").write_text(f"a man rides a bike {i}\n")
  (manual / "00000" / "000000009.jpg").write_bytes(b"not an image")  # with a caption: counted
  (manual / "00000" / "000000009.txt").write_text("broken")
  (manual / "captions.tsv").write_text("caption\turl\n" + "".join(
      f"a dog runs {i}\t{name}\n" for i, name in enumerate(files)))
  _, data_dir = build(tmp_path, "unimo_cc/tsv", manual)
  _, rows = read(data_dir, "unimo_cc/tsv", "train", tokenizer=tokenizer)
  assert [r["caption"] for r in rows] == [f"a dog runs {i}" for i in range(4)]
  assert [bytes(r["image_bytes"]) for r in rows] == list(files.values())
  with pytest.raises(DataError, match=r"000000009.jpg"):
    build(tmp_path / "strict", "unimo_cc/folders", manual)
  builder, data_dir = build(tmp_path / "skip", "unimo_cc/folders", manual, skip_bad=True)
  source, rows = read(data_dir, "unimo_cc/folders", "train", tokenizer=tokenizer)
  assert [r["image_id"] for r in rows] == [f"{i:09d}" for i in range(4)]
  assert rows[3]["caption"] == "a man rides a bike 3" and source.meta["skipped"] == {"train": 1}
  assert decode_image(bytes(rows[1]["image_bytes"]), "grey").shape == (10, 13, 3)


def test_command_line(tmp_path, capsys):
  manual = tmp_path / "bua"
  manual.mkdir()
  write_bua_tsv(manual / "f.tsv", [("1", 2, True), ("2", 3, True)])
  assert data_cli(["tfds", "unimo_bottom_up/regions", "--manual-dir", str(manual),
                   "--data-dir", str(tmp_path / "d")]) == 0
  out = capsys.readouterr().out
  assert "prepared tfds:unimo_bottom_up/regions" in out and "train 2" in out
  assert data_cli(["tfds", "unimo_bottom_up", "--manual-dir", str(manual),
                   "--data-dir", str(tmp_path / "d")]) == 2
  assert "expected a config, one of ['regions', 'regions_probs']" in capsys.readouterr().err
  assert data_cli(["tfds", "coco", "--manual-dir", str(manual)]) == 2
  assert "expected one of" in capsys.readouterr().err
  assert data_cli(["tfds", "unimo_vqa_v2", "--manual-dir", str(tmp_path / "none"),
                   "--data-dir", str(tmp_path / "d")]) == 2
  assert "expected a folder of the files to read" in capsys.readouterr().err


def test_start_up_check_reads_a_tfds_datasets_region_sizes(tmp_path, tokenizer):
  """A tfds:... dataset's region_feature_dim / num_classes (from its info, no records read) are
  checked against the model before anything is compiled, as a shard directory's are."""
  import ml_collections
  from unimo_jax.train.checks import check_data_against_model
  from unimo_jax.errors import ConfigError
  manual = tmp_path / "bua"
  manual.mkdir()
  write_bua_tsv(manual / "f.tsv", [("1", 2, True)])
  _, data_dir = build(tmp_path, "unimo_bottom_up/regions_probs", manual)
  cfg = data_config()
  cfg.tfds_data_dir = str(data_dir)
  model = ml_collections.ConfigDict({"vocab_size": 1000, "region_feature_dim": D,
                                     "num_region_classes": C})
  check_data_against_model(model, tokenizer, "tok", {"data.image_dir":
                                                     "tfds:unimo_bottom_up/regions_probs"}, cfg)
  model.num_region_classes = C + 1
  with pytest.raises(ConfigError, match=r"data.image_dir tfds:unimo_bottom_up/regions_probs has "
                                        rf"num_classes={C}, the model expects "
                                        rf"model.num_region_classes={C + 1}"):
    check_data_against_model(model, tokenizer, "tok", {"data.image_dir":
                                                       "tfds:unimo_bottom_up/regions_probs"}, cfg)
  with pytest.raises(DataError, match="cannot open the tfds dataset 'unimo_nothing'"):
    check_data_against_model(model, tokenizer, "tok", {"data.image_dir": "tfds:unimo_nothing"},
                             cfg)


def test_pretraining_pairs_in_pixel_mode_from_a_cc_build(tmp_path, tokenizer):
  """Captioned photos (img2dataset folders) -> unimo_cc -> the pretraining pair stream in pixel
  mode: each image decoded and randomly cropped to the model's size. Solid-colour photos of
  different sizes and modes keep their colour under any crop, so each row's pixels say which
  photo it came from; its caption says the same."""
  from unimo_jax.data.pipeline.streams import make_pretraining_iterator
  manual = tmp_path / "cc" / "00000"
  manual.mkdir(parents=True)
  colours = {}
  for i, (mode, size) in enumerate([("RGB", (40, 30)), ("L", (25, 50)), ("RGBA", (64, 64)),
                                    ("RGB", (90, 20))]):
    value = (40 * i + 20, 200 - 30 * i, 15 * i) if mode != "L" else (90, 90, 90)
    fill = value[0] if mode == "L" else value + ((255,) if mode == "RGBA" else ())
    Image.new(mode, size, fill).save(manual / f"{i:09d}.png")
    (manual / f"{i:09d}.txt").write_text(["a dog runs", "two cats sleep", "a man rides a bike",
                                          "is there a dog"][i])
    colours[i] = np.array(value, np.float32) / 255
  _, data_dir = build(tmp_path, "unimo_cc/folders", tmp_path / "cc")
  cfg = data_config()
  cfg.tfds_data_dir, cfg.image_input = str(data_dir), "pixels"
  cfg.max_caption_length, cfg.cmcl_extra_images, cfg.num_threads = 12, 0, 0
  special = tokenizer.special_ids
  it = make_pretraining_iterator(cfg, {"pair": 4}, special, tokenizer.vocab_size,
                                 dirs={"pair": "tfds:unimo_cc/folders"}, process_index=0,
                                 process_count=1, tokenizer=tokenizer, image_size=16)
  captions = {tuple(tokenizer.encode(t)): i for i, t in enumerate(
      ["a dog runs", "two cats sleep", "a man rides a bike", "is there a dog"])}
  for _ in range(2):
    batch = next(it)
    pixels = batch["cmcl"]["image"]["pixels"]  # [4, 16, 16, 3]
    assert pixels.shape == (4, 16, 16, 3)
    for row, ids in zip(pixels, batch["cmcl"]["text"]["input_ids"]):
      words = [int(t) for t in ids[1:] if t not in (special["sep"], special["pad"])]
      photo = captions[tuple(words)]
      np.testing.assert_allclose(row, np.broadcast_to(colours[photo], row.shape), atol=1e-6)
