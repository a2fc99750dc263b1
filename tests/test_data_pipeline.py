"""grain pipelines: fixed shapes, determinism, resumable state, per-host split, global arrays."""

import jax
import numpy as np
import pytest

from data_fixtures import SPECIAL, VOCAB, small_data_config, trees_equal, write_datasets
from unimo_jax.data.pipeline.streams import (host_records, make_pretraining_iterator,
                                             to_global_arrays)
from unimo_jax.data.formats.records import ShardSource

SIZES = {"text": 4, "image": 4, "pair": 4}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return write_datasets(tmp_path_factory.mktemp("data"))


def _iterator(root, **overrides):
  cfg = small_data_config(root)
  for k, v in overrides.items():
    setattr(cfg, k, v)
  return make_pretraining_iterator(cfg, SIZES, SPECIAL, VOCAB, process_index=0, process_count=1)


def test_batches_have_fixed_shapes_and_every_term(root):
  it = _iterator(root)
  first = next(it)
  assert set(first) == {"text_mlm", "text_seq2seq", "image_mrm", "pair_mlm", "pair_mrm",
                        "pair_caption", "cmcl"}
  shapes = jax.tree.map(np.shape, first)
  for _ in range(12):  # past an epoch of every stream: shapes never change
    assert jax.tree.map(np.shape, next(it)) == shapes
  assert shapes["text_mlm"]["input_ids"] == (4, 16)
  assert shapes["cmcl"]["extra_text"]["input_ids"] == (4, 4, 12)
  assert shapes["cmcl"]["extra_image"]["region_features"] == (4, 1, 4, 8)
  mlm = first["text_mlm"]
  rows = np.arange(4)[:, None]
  masked_at = mlm["input_ids"][rows, mlm["lm_positions"]]
  real = mlm["lm_weights"] > 0
  # labels are the original tokens: each text record is one repeated token
  assert np.all(mlm["lm_labels"][real] >= 10)
  assert np.mean(masked_at[real] == SPECIAL["mask"]) > 0.5


def test_same_seed_same_batches_and_other_seed_differs(root):
  a, b, c = _iterator(root), _iterator(root), _iterator(root, seed=7)
  for _ in range(5):
    x, y, z = next(a), next(b), next(c)
    assert trees_equal(x, y)
  assert not trees_equal(x, z)


def test_restored_state_gives_the_same_next_batches(root):
  it = _iterator(root)
  for _ in range(7):  # mid-epoch for the 40 text / 24 image / 32 pair records
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(4)]
  fresh = _iterator(root)
  fresh.set_state(state)
  for want in expected:
    assert trees_equal(next(fresh), want)
  assert state == {"step": 7}
  with pytest.raises(ValueError, match="older input pipeline"):
    fresh.set_state({"text": {"next_index": 28}})


def test_per_host_split_is_disjoint_and_complete(root):
  source = ShardSource(root / "text")
  seen = []
  for host in range(2):
    records = host_records(source, seed=3, process_index=host, process_count=2)
    seen.append([int(r["input_ids"][0]) for r in records])
  assert len(seen[0]) == len(seen[1]) == 20
  assert not set(seen[0]) & set(seen[1])
  assert sorted(seen[0] + seen[1]) == list(range(10, 50))
  # and the hosts' pipelines yield disjoint documents
  cfg = small_data_config(root)
  firsts = []
  for host in range(2):
    it = make_pretraining_iterator(cfg, {"text": 4}, SPECIAL, VOCAB, process_index=host,
                                   process_count=2)
    batch = next(it)["text_seq2seq"]
    firsts.append(set(batch["input_ids"][batch["input_ids"] >= 10].tolist()))
  assert firsts[0] and firsts[1] and not firsts[0] & firsts[1]


def test_skip_bad_records_counts_instead_of_failing(tmp_path):
  root = write_datasets(tmp_path)
  from unimo_jax.data.formats.records import read_metadata
  shard = root / "pair" / read_metadata(root / "pair")["shards"][3]["file"]
  shard.write_bytes(b"garbage")
  with pytest.raises(Exception, match=shard.name):
    it = _iterator(root)
    for _ in range(20):
      next(it)
  it = _iterator(root, skip_bad_records=True)
  for _ in range(20):
    batch = next(it)
    assert batch["pair_mlm"]["input_ids"].shape == (2 * 2, 12)
  assert it.counter.count > 0


def test_global_arrays_are_sharded_on_the_batch_axes(root):
  from unimo_jax.parallel import make_mesh
  mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  batch = next(_iterator(root))
  arrays = to_global_arrays(batch, mesh)
  x = arrays["pair_mrm"]["region_features"]
  assert x.shape == (4, 4, 8) and x.sharding.spec[0] == ("data", "fsdp")
  assert x.addressable_shards[0].data.shape == (1, 4, 8)
  np.testing.assert_array_equal(np.asarray(x), batch["pair_mrm"]["region_features"])


def test_bad_configuration_is_named(root):
  cfg = small_data_config(root)
  with pytest.raises(ValueError, match="not divisible by the 3 hosts"):
    make_pretraining_iterator(cfg, {"text": 4}, SPECIAL, VOCAB, process_index=0, process_count=3)
  cfg.text_dir = cfg.image_dir
  with pytest.raises(ValueError, match="expected a text dataset, found kind 'image'"):
    make_pretraining_iterator(cfg, {"text": 4}, SPECIAL, VOCAB, process_index=0, process_count=1)


def test_pixel_input_pairs(tmp_path):
  from unimo_jax.data.synthetic.scene_dataset import write_synthetic
  write_synthetic(tmp_path, pairs=40, eval_pairs=8, images=16, texts=20, feature_dim=8,
                  log=lambda *_: None)
  cfg = small_data_config(tmp_path / "train")
  cfg.image_input = "pixels"
  it = make_pretraining_iterator(cfg, {"pair": 4}, SPECIAL, 40, process_index=0, process_count=1)
  batch = next(it)
  assert "pair_mrm" not in batch and batch["pair_mlm"]["pixels"].shape == (4, 64, 64, 3)
  assert batch["cmcl"]["extra_image"]["pixels"].shape == (4, 1, 64, 64, 3)
  assert 0.0 <= batch["cmcl"]["image"]["pixels"].min() and batch["cmcl"]["image"]["pixels"].max() <= 1
  with pytest.raises(ValueError, match="needs data.image_input='regions'"):
    make_pretraining_iterator(cfg, {"image": 4}, SPECIAL, 40, process_index=0, process_count=1)


def test_synthetic_batches_drive_the_pretraining_loss(tmp_path):
  """Every term of a freshly initialised tiny model starts at chance on real pipeline batches."""
  import math
  from train_helpers import pretrain_config
  from unimo_jax.data.synthetic.scene_dataset import write_synthetic
  from unimo_jax.data.formats.tokenizers import load_tokenizer
  from unimo_jax.model import init_params
  from unimo_jax.objectives.pretraining_loss import TERMS, pretraining_loss
  write_synthetic(tmp_path, pairs=64, eval_pairs=8, images=32, texts=64, feature_dim=32,
                  log=lambda *_: None)
  tok = load_tokenizer(tmp_path / "tokenizer.model")
  cfg = small_data_config(tmp_path / "train")
  it = make_pretraining_iterator(cfg, {"text": 8, "image": 8, "pair": 8}, tok.special_ids,
                                 tok.vocab_size, process_index=0, process_count=1)
  config = pretrain_config("tiny")
  params = {"params": init_params(config.model, jax.random.key(0))}
  _, metrics = jax.jit(lambda p, b: pretraining_loss(p, b, config))(params, next(it))
  assert {k.split("/")[0] for k in metrics if "/" in k} == set(TERMS)
  for term in ("text_mlm", "text_seq2seq", "pair_mlm", "pair_caption"):
    assert abs(float(metrics[f"{term}/nll"]) - math.log(config.model.vocab_size)) < 0.3, term
  assert float(metrics["cmcl/hard_negative_accuracy"]) <= 1.0
  assert float(metrics["pair_mrm/regions"]) >= 8  # at least one masked region per image


def test_cmcl_without_extra_slots(root):
  it = _iterator(root, cmcl_extra_positives=0, cmcl_hard_negatives=0, cmcl_extra_images=0)
  cmcl = next(it)["cmcl"]
  assert set(cmcl) == {"image", "text"}


def _twin_linked_pairs(root, count=16, linked=12):
  """Pairs whose caption says their index ([10 + i] * 4); pairs 2m and 2m + 1 below `linked` are
  each other's twin_pairs, the rest have none."""
  from data_fixtures import CLASSES, DIM, image_example
  from unimo_jax.data.formats.records import write_examples
  rng = np.random.default_rng(3)
  pairs = [dict(image_example(rng, i), caption_ids=np.full(4, 10 + i, np.int32),
                twin_pairs=np.array([i ^ 1] if i < linked else [], np.int64))
           for i in range(count)]
  write_examples(root / "twins", "pair", pairs, region_feature_dim=DIM, num_classes=CLASSES)
  return root / "twins"


def _partners(batch):
  """(first, second) record indices of each co-batched group, from the caption ids."""
  index = batch["cmcl"]["text"]["input_ids"][:, 1] - 10  # after [CLS]
  return list(zip(index[0::2].tolist(), index[1::2].tolist()))


def test_hard_negative_images_are_co_batched_at_the_configured_fraction(tmp_path):
  pair_dir = _twin_linked_pairs(tmp_path)
  cfg = small_data_config(tmp_path)
  cfg.pair_dir, cfg.image_dir, cfg.cmcl_extra_images = str(pair_dir), "", 0

  def iterator(fraction):
    cfg.cmcl_twin_fraction = fraction
    return make_pretraining_iterator(cfg, {"pair": 4}, SPECIAL, VOCAB, process_index=0,
                                     process_count=1, dirs={"pair": cfg.pair_dir})

  always = iterator(1.0)
  groups = [g for _ in range(20) for g in _partners(next(always))]
  assert all(second == first ^ 1 for first, second in groups if first < 12)
  assert {first for first, _ in groups} == set(range(16))  # every pair leads a group per epoch
  half = iterator(0.5)
  groups = [g for _ in range(150) for g in _partners(next(half))]
  linked = [second == first ^ 1 for first, second in groups if first < 12]
  # A twin with probability 0.5, else a random pair of 16 (the twin 1 time in 16): 0.53.
  assert 0.40 < np.mean(linked) < 0.66, np.mean(linked)
  # Resumable as every stream: the same next batches after restoring the state.
  it = iterator(0.5)
  for _ in range(5):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(3)]
  fresh = iterator(0.5)
  fresh.set_state(state)
  assert all(trees_equal(e, next(fresh)) for e in expected)
  with pytest.raises(ValueError, match="co-batches pairs two by two; 3 pairs per host is odd"):
    cfg.cmcl_twin_fraction = 1.0
    make_pretraining_iterator(cfg, {"pair": 3}, SPECIAL, VOCAB, process_index=0, process_count=1,
                              dirs={"pair": cfg.pair_dir})


def _corrupt_chunks(path, start=1000, size=500):
  """Overwrites bytes among a small shard's records (its first few KiB) with random ones."""
  data = bytearray(path.read_bytes())
  data[start:start + size] = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
  path.write_bytes(bytes(data))


def test_corrupt_chunks_in_what_tasks_and_the_held_out_eval_read(tmp_path, scenes):
  """A task's splits and the held-out evaluation read their records whole: with
  data.skip_bad_records the unreadable ones are left out and counted, the rest keep their order;
  without it, the first one is a DataError naming the file and record."""
  import ml_collections
  from train_helpers import config_from_file
  from unimo_jax.data.formats.records import ShardSource, read_metadata
  from unimo_jax.data.pipeline.streams import ReadableRecords
  from unimo_jax.errors import DataError
  from unimo_jax.tasks.registry import make_task
  root = write_datasets(tmp_path, n_pair=60)
  shard = root / "pair" / read_metadata(root / "pair")["shards"][2]["file"]
  _corrupt_chunks(shard)
  source = ShardSource(root / "pair")
  bad = []
  for i in range(len(source)):
    try:
      source[i]
    except DataError:
      bad.append(i)
  assert 0 < len(bad) < 10, bad  # some records of the corrupt shard, not all
  readable = ReadableRecords(source, "test")
  assert readable.skipped == len(bad) and len(readable) == 60 - len(bad)
  good = [i for i in range(60) if i not in bad]
  assert [readable[k]["image_id"] for k in (0, len(good) - 1)] == [
      source[good[0]]["image_id"], source[good[-1]]["image_id"]]

  config = config_from_file("caption", "tiny")
  config.data.train_dir = config.data.eval_dir = str(root / "pair")
  from unimo_jax.data.formats.tokenizers import load_tokenizer
  paths = {"train": str(root / "pair"), "eval": str(root / "pair"),
           "tokenizer": str(scenes / "tokenizer.model")}
  tokenizer = load_tokenizer(paths["tokenizer"])
  task = make_task(config, tmp_path / "w", data_paths=paths, tokenizer=tokenizer)
  first = bad[0] - 20  # the shard's third: its records 20..29
  with pytest.raises(DataError, match=rf"{shard.name} records {first}\.\.{first}: cannot read"):
    task.train_examples()
  config = ml_collections.ConfigDict(config.to_dict())
  config.data.skip_bad_records = True
  task = make_task(config, tmp_path / "w2", data_paths=paths, tokenizer=tokenizer)
  assert task.train_examples() == 60 - len(bad)
  assert task.skipped == {"train_unreadable": len(bad)}
  from unimo_jax.train.heldout_eval import Evaluator
  pretrain = config_from_file("pretrain", "tiny")
  pretrain.data.skip_bad_records = True
  evaluation = Evaluator(pretrain, str(root / "pair"), task.tokenizer, max_pairs=100)
  assert evaluation.count == 60 - len(bad)


# ---- worker processes (data.workers) ---------------------------------------------------------

def _batches(it, count):
  try:
    return [next(it) for _ in range(count)]
  finally:
    it.close()


def test_worker_processes_give_the_in_process_batches_and_resume_exactly(root):
  """Batch `step` is the same built here or by 1 or 2 worker processes; the state saved with
  workers on resumes the same stream, under another worker count too."""
  expected = _batches(_iterator(root, workers=0, num_threads=0), 10)
  assert not trees_equal(expected[0], expected[1])
  it = _iterator(root, workers=2)
  try:
    for want in expected[:6]:
      assert trees_equal(next(it), want)
    state = it.get_state()
  finally:
    it.close()
  assert state == {"step": 6}
  resumed = _iterator(root, workers=1)
  resumed.set_state(state)
  assert all(trees_equal(got, want) for got, want in zip(_batches(resumed, 4), expected[6:]))


def test_a_worker_names_a_corrupt_record_or_counts_it(tmp_path):
  from unimo_jax.data.formats.records import read_metadata
  from unimo_jax.errors import DataError
  root = write_datasets(tmp_path)
  shard = root / "pair" / read_metadata(root / "pair")["shards"][1]["file"]
  shard.write_bytes(b"garbage")
  it = _iterator(root, workers=2)
  with pytest.raises(DataError, match=shard.name):
    _batches(it, 20)
  # With skipping, the workers' batches and count are the in-process ones: each unreadable
  # record (10 of 32 pairs) is replaced by the next readable one after its batch.
  it = _iterator(root, workers=2, skip_bad_records=True)
  batches = _batches(it, 12)
  plain = _iterator(root, workers=0, skip_bad_records=True)
  assert all(trees_equal(a, b) for a, b in zip(batches, _batches(plain, 12)))
  assert it.counter.count == plain.counter.count >= 10


def test_a_killed_worker_fails_the_run_with_a_message_not_a_hang(root):
  import multiprocessing
  import os
  import signal
  from unimo_jax.errors import DataError

  def hung(*_):
    raise TimeoutError("the iterator hung after its worker was killed")

  it = _iterator(root, workers=2, prefetch=1)
  previous = signal.signal(signal.SIGALRM, hung)
  signal.alarm(120)
  try:
    next(it)
    for child in multiprocessing.active_children():
      os.kill(child.pid, signal.SIGKILL)
    with pytest.raises(DataError, match=r"a worker process \(data.workers=2\) died"):
      for _ in range(50):
        next(it)
  finally:
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)
    it.close()


@pytest.mark.parametrize("task_name,overrides", [
    ("retrieval", {"task.negative_source": "train_set", "task.negatives": 2}),
    ("vqa", {})])
def test_task_batches_from_workers_equal_the_in_process_ones_and_resume(scenes, tmp_path,
                                                                         task_name, overrides):
  """A task's training batches (train_example per record, seeded by step and record; retrieval
  also reading sampled negatives from the training split) built by 2 worker processes equal
  those built here, and resume from the state at step 3."""
  import ml_collections
  from train_helpers import config_from_file
  from unimo_jax.data.pipeline.host_batches import HostBatchIterator
  from unimo_jax.tasks.registry import make_task
  config = config_from_file(task_name, "tiny")
  config.data.synthetic_dir = str(scenes)
  for key, value in overrides.items():
    section, name = key.split(".")
    config[section][name] = value

  task = make_task(config, tmp_path / "w")
  source = task.train_batches().source  # host batch `step` of the task, a pure function

  def batches(workers, count, state=None):
    cfg = ml_collections.ConfigDict({"workers": workers, "num_threads": 2 if workers else 0,
                                     "prefetch": 2})
    it = HostBatchIterator(source, cfg)
    if state is not None:
      it.set_state(state)
    return _batches(it, count)

  expected = batches(0, 6)
  assert trees_equal(batches(2, 6), expected)
  assert trees_equal(batches(1, 3, state={"step": 3}), expected[3:])
  assert not trees_equal(expected[0], expected[1])
