"""`python -m unimo_jax.data regions`: image files -> region shards through the detector (the
narrow random-weight detector of test_detector.py), resumed without redoing finished shards,
split across processes, bad files named or counted; and end to end, region shards of photos ->
a caption fine-tune -> Pipeline.caption on a PNG file."""

import json
import os

import numpy as np
import pytest

from test_images import photo_folder
from tests.test_detector import TINY
from unimo_jax.convert.detector import params_from_state_dict, random_state_dict
from unimo_jax.data.__main__ import main as data_cli
from unimo_jax.data.formats import region_extraction
from unimo_jax.data.formats.images import read_image
from unimo_jax.data.formats.records import ShardSource
from unimo_jax.detector.extractor import Extractor, save_detector


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  """A detector checkpoint, the photo folder (24 images, a corrupt JPEG, a missing file, two
  captions each) and a word tokenizer of its captions."""
  from unimo_jax.data.formats.tokenizers import SentencePieceTokenizer
  base = tmp_path_factory.mktemp("regions")
  state = random_state_dict(TINY, seed=5)
  state["roi_heads.box_predictor.cls_score.weight"] *= 3.0
  params, _ = params_from_state_dict(state, TINY)
  save_detector(base / "detector", TINY, params)
  captions, count = photo_folder(base / "images")
  texts = [a["caption"] for a in json.loads(captions.read_text())["annotations"]]
  SentencePieceTokenizer.train(texts * 10, vocab_size=40, model_type="word",
                               out_path=base / "tokenizer.model")
  return base, captions, count, params


def _regions(world, out, *extra):
  base = world[0]
  return data_cli(["regions", "--images", str(base / "images"), "--detector",
                   str(base / "detector"), "--out", str(out), "--images-per-shard", "10",
                   *extra])


def test_image_shards_hold_the_detectors_regions(world, tmp_path, capsys):
  base, _, count, params = world
  assert _regions(world, tmp_path / "strict") == 2  # the corrupt JPEG, named
  assert "broken.jpg" in capsys.readouterr().err
  assert _regions(world, tmp_path / "out", "--skip-bad") == 0
  out = capsys.readouterr().out
  assert f"wrote {count} image records of {count} images" in out and "(1 files skipped)" in out
  assert "regions: 25/25 images" in out  # the progress line
  meta = json.loads((tmp_path / "out" / "metadata.json").read_text())
  assert meta["region_feature_dim"] == TINY.feature_dim and meta["num_classes"] == 21
  assert len(meta["shards"]) == 3 and meta["skipped_files"][0][0] == "broken"
  source = ShardSource(tmp_path / "out")
  assert len(source) == count
  by_id = {r["image_id"]: r for r in source}
  expected = Extractor(TINY, params)([read_image(base / "images" / "img4.png"),
                                      read_image(base / "images" / "img0.jpg")])
  for image_id, regions in zip(("img4", "img0"), expected):
    record = by_id[image_id]
    assert record["region_features"].dtype == np.float16
    assert (record["image_w"], record["image_h"]) == (regions["image_w"], regions["image_h"])
    np.testing.assert_allclose(record["boxes"], regions["boxes"])
    np.testing.assert_allclose(record["region_features"], regions["region_features"],
                               rtol=1e-3, atol=1e-3)  # float16 storage
    np.testing.assert_allclose(record["class_probs"], regions["class_probs"], atol=1e-3)
    assert TINY.min_boxes <= len(record["boxes"]) <= TINY.max_boxes


def test_a_stopped_run_resumes_without_redoing_finished_shards(world, tmp_path, capsys):
  out = tmp_path / "out"
  assert _regions(world, out, "--skip-bad") == 0
  shards = sorted(out.glob("*.array_record"))
  before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in shards}
  # as if stopped while writing the last shard: its file and done-marker are not there
  os.remove(shards[-1])
  os.remove(str(shards[-1]) + region_extraction.DONE_SUFFIX)
  os.remove(out / "metadata.json")
  capsys.readouterr()
  assert _regions(world, out, "--skip-bad") == 0
  printed = capsys.readouterr().out
  assert "2 of this process's 3 shards are done already" in printed
  assert "regions: 5/5 images" in printed  # only the last shard's images ran
  for p in sorted(out.glob("*.array_record")):
    mtime, data = before[p.name]
    assert p.read_bytes() == data
    assert (p.stat().st_mtime_ns == mtime) == (p != shards[-1])
  assert json.loads((out / "metadata.json").read_text())["num_records"] == world[2]


def test_each_process_extracts_its_share(world, tmp_path):
  base, _, count, params = world
  items = region_extraction.image_files(base / "images")[:12]
  items = [i for i in items if i[0] != "broken"]
  extractor = Extractor(TINY, params)
  kwargs = dict(images_per_shard=4, process_count=2)
  assert region_extraction.extract_regions(items, tmp_path, extractor, process_index=1,
                                           **kwargs) is None
  assert sorted(p.name for p in tmp_path.glob("*.array_record")) == ["image-00001-of-00003.array_record"]
  meta = region_extraction.extract_regions(items, tmp_path, extractor, process_index=0, **kwargs)
  assert meta["num_records"] == len(items) and [s["records"] for s in meta["shards"]] == [4, 4, 3]
  assert [r["image_id"] for r in ShardSource(tmp_path)] == [i[0] for i in items]


def test_pair_shards_from_a_captions_json(world, tmp_path):
  base, captions, count, _ = world
  assert _regions(world, tmp_path / "pairs", "--captions", str(captions), "--tokenizer",
                  str(base / "tokenizer.model"), "--skip-bad") == 0
  meta = json.loads((tmp_path / "pairs" / "metadata.json").read_text())
  assert meta["kind"] == "pair" and meta["num_records"] == 2 * count
  assert meta["skipped"] == 2  # broken.jpg does not decode, gone.png does not exist
  first = ShardSource(tmp_path / "pairs")[0]
  assert first["caption"] == "a red square" and len(first["caption_ids"]) == 3
  assert first["region_features"].shape[1] == TINY.feature_dim


@pytest.mark.slow
def test_photos_to_captions_through_the_detector(world, tmp_path):
  """Region shards of the photos -> the pair stream -> a tiny caption fine-tune that learns
  (BLEU-4 0.53 at seed 0, CIDEr-D 3.7) -> captions of a PNG file through Pipeline (detector +
  UNIMO), the same as for the file's stored regions."""
  from train_helpers import config_from_file, set_fields, training_losses
  from unimo_jax.inference import Pipeline
  from unimo_jax.train import driver
  base, captions, count, _ = world
  assert _regions(world, tmp_path / "pairs", "--captions", str(captions), "--tokenizer",
                  str(base / "tokenizer.model"), "--skip-bad") == 0
  c = config_from_file("caption", "tiny")
  c = set_fields(c, {"model.region_feature_dim": TINY.feature_dim,
                     "model.num_region_classes": TINY.num_classes,
                     "data.train_dir": str(tmp_path / "pairs"),
                     "data.eval_dir": str(tmp_path / "pairs"),
                     "data.tokenizer": str(base / "tokenizer.model"),
                     "data.detector": str(base / "detector"), "steps": 120, "batch_size": 16,
                     "log_every": 10, "checkpoint_every": 1000, "async_checkpoints": False,
                     "eval_batch": 16, "optimizer.learning_rate": 2e-3,
                     "optimizer.warmup_steps": 2, "data.eval_limit": 0,
                     "decode.max_length": 6, "decode.beam_size": 2})
  metrics = driver.train_and_evaluate(c, tmp_path / "run")
  losses = list(training_losses(tmp_path / "run").values())
  assert np.mean(losses[-3:]) < np.mean(losses[:3])
  # even a random-weight detector's regions carry the colours and shapes the captions name
  assert metrics["images"] == count and metrics["BLEU-4"] > 0.2, metrics
  pipe = Pipeline.load(tmp_path / "run")
  png = base / "images" / "img4.png"
  text = pipe.caption(png)
  assert isinstance(text, str) and text
  pixels = read_image(png)
  assert pipe.caption(pixels) == text
  record = ShardSource(tmp_path / "pairs")[8]
  assert record["image_id"] == "4"
  assert pipe.caption({k: record[k] for k in ("region_features", "boxes", "image_w",
                                              "image_h")}) == text
  ranked = pipe.rank_captions(png, ["a red square", "a blue circle"])
  assert sorted(c for c, _ in ranked) == ["a blue circle", "a red square"]
  without = Pipeline.load(tmp_path / "run", detector=None)
  with pytest.raises(ValueError, match="data.detector"):
    with_config = without.config
    with with_config.unlocked():
      with_config.data.detector = ""
    without.caption(png)


def test_the_tfds_builder_gives_the_shards_records(world, tmp_path):
  """unimo_regions/pairs: the same records as `regions --captions` (captions as text, tokenized
  when read), bad files counted."""
  from unimo_jax.data.formats import tfds_builders
  from unimo_jax.data.formats.tfds_source import open_records
  from unimo_jax.data.formats.tokenizers import load_tokenizer
  from unimo_jax.data.pipeline.examples import data_config
  base, captions, count, _ = world
  manual = tmp_path / "manual"
  manual.symlink_to(base / "images")
  builder = tfds_builders.build("unimo_regions/pairs", manual, tmp_path / "tfds", skip_bad=True,
                                detector=str(base / "detector"))
  assert builder.info.metadata["skipped"] == {"train": 2}
  cfg = data_config()
  cfg.tfds_data_dir = str(tmp_path / "tfds")
  tokenizer = load_tokenizer(base / "tokenizer.model")
  source = open_records("tfds:unimo_regions/pairs@train", "pair", cfg, tokenizer=tokenizer)
  assert len(source) == 2 * count
  assert _regions(world, tmp_path / "pairs", "--captions", str(captions), "--tokenizer",
                  str(base / "tokenizer.model"), "--skip-bad") == 0
  shards = ShardSource(tmp_path / "pairs")
  for i in (0, 9, 2 * count - 1):
    ours, theirs = source[i], shards[i]
    assert ours["caption"] == theirs["caption"]
    np.testing.assert_array_equal(ours["caption_ids"], theirs["caption_ids"])
    for name in ("region_features", "boxes", "class_probs"):
      np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
  with pytest.raises(Exception, match="expected --detector"):
    tfds_builders.build("unimo_regions/images", manual, tmp_path / "tfds2")


@pytest.mark.slow
def test_two_processes_under_jax_distributed_split_the_shards(world, tmp_path):
  """Two `regions` processes joined by jax.distributed: each writes its own shards, and process
  0 writes the metadata after both are done; the records are those of one process alone."""
  import socket
  import subprocess
  import sys
  from train_helpers import ROOT
  base = world[0]
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  command = [sys.executable, "-m", "unimo_jax.data", "regions", "--images", str(base / "images"),
             "--detector", str(base / "detector"), "--out", str(tmp_path / "two"),
             "--images-per-shard", "5", "--skip-bad", "--coordinator", f"127.0.0.1:{port}",
             "--num-processes", "2"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1")
  procs = [subprocess.Popen(command + ["--process-id", str(i)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outputs = [p.communicate(timeout=300) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outputs]
  assert "process 1 of 2" in outputs[1][0] and "wrote" not in outputs[1][0]
  assert "wrote 24 image records of 24 images" in outputs[0][0]
  done = {json.loads(p.read_text())["file"] for p in (tmp_path / "two").glob("*.done.json")}
  assert len(done) == 5  # 25 files in shards of 5: process 0 has 0, 2, 4 and process 1 has 1, 3
  assert _regions(world, tmp_path / "one", "--skip-bad") == 0
  two, one = ShardSource(tmp_path / "two"), ShardSource(tmp_path / "one")
  assert [r["image_id"] for r in two] == [r["image_id"] for r in one]
  np.testing.assert_array_equal(two[7]["region_features"], one[7]["region_features"])
