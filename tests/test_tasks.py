"""Every fine-tuning task end to end on its synthetic version (8 simulated devices): a few steps
lower the training loss, eval writes metrics and predictions; resume equals an uninterrupted run;
the inference API reproduces the predictions files; bad input gives named errors or counted skips.
"""

import json
import pathlib

import flax
import jax
import numpy as np
import pytest

from train_helpers import config_from_file, set_fields, training_losses
from unimo_jax.data.formats.records import ShardSource, write_examples
from unimo_jax.errors import DataError
from unimo_jax.tasks.registry import make_task
from unimo_jax.train import driver
from unimo_jax.train.metric_log import read_metric_rows
from unimo_jax.errors import ConfigError

TASK_STEPS = 30


def task_config(name, scenes, **overrides):
  c = config_from_file(name, "tiny")
  c.data.synthetic_dir = str(scenes)
  c.data.synthetic_train_scenes = 16  # a set the model can fit in a few steps
  c.data.synthetic_eval_scenes = 12
  c.data.eval_limit = 12
  c.steps = TASK_STEPS
  c.batch_size = 16
  c.log_every = 1
  c.checkpoint_every = 1000
  c.async_checkpoints = False
  c.eval_batch = 16
  c.optimizer.learning_rate = 2e-3
  c.optimizer.warmup_steps = 3
  c.decode.max_length = 8
  c.decode.beam_size = 2
  return set_fields(c, overrides)


def losses(workdir):
  return list(training_losses(workdir).values())


def predictions(workdir):
  return [json.loads(l) for l in open(workdir / "predictions.jsonl")]


EXPECTED = {
    "caption": ("CIDEr-D", "BLEU-4", "ROUGE-L"),
    "retrieval": ("i2t_R@1", "t2i_R@10", "zero_shot_i2t_R@1"),
    "vqa": ("accuracy", "accuracy_count", "accuracy_colour"),
    "snli_ve": ("accuracy", "accuracy_neutral"),
    "glue": ("accuracy", "matthews"),
    "seq2seq": ("ROUGE-L", "BLEU-4"),
}


# From a random backbone the entailment head needs a larger step to move within 30 steps.
LEARNING_RATE = {"snli_ve": 5e-3}


@pytest.fixture(scope="module")
def trained_task(scenes, tmp_path_factory):
  """trained_task(name) -> (config, workdir, metrics) of the task's TASK_STEPS-step fine-tune,
  trained once for every test of the module that reads it."""
  runs = {}

  def train(name):
    if name not in runs:
      config = task_config(name, scenes)
      config.optimizer.learning_rate = LEARNING_RATE.get(name, config.optimizer.learning_rate)
      workdir = tmp_path_factory.mktemp(f"trained_{name}")
      runs[name] = (config, workdir, driver.train_and_evaluate(config, workdir))
    return runs[name]
  return train


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_task_trains_and_evaluates(name, trained_task):
  config, tmp_path, metrics = trained_task(name)
  curve = losses(tmp_path)
  assert len(curve) == TASK_STEPS
  assert np.mean(curve[-5:]) < 0.85 * np.mean(curve[:3]), curve
  written = json.loads((tmp_path / "eval_metrics.json").read_text())
  for key in EXPECTED[name]:
    assert key in written and np.isfinite(written[key]), (key, written)
    assert written[key] == pytest.approx(metrics[key])
  rows = predictions(tmp_path)
  assert len(rows) == int(written.get("images", written.get("examples", written.get(
      "questions", len(rows)))))
  assert len(rows) > 0
  # The one driver's metrics: throughput and MFU on every logged step, and the paths resolved
  # for the run written beside the config, which keeps the fields as given.
  train_rows = [r for r in read_metric_rows(tmp_path) if r["split"] == "train"]
  assert all(r["mfu"] > 0 and r["examples_per_second"] > 0 and r["tokens_per_second"] > 0
             for r in train_rows)
  paths = json.loads((tmp_path / "data_paths.json").read_text())
  assert {"train", "eval", "predict", "tokenizer"} <= set(paths)
  assert pathlib.Path(paths["train"]).exists() and config.data.train_dir == ""
  assert json.loads((tmp_path / "config.json").read_text())["data"]["train_dir"] == ""


@pytest.mark.slow
def test_captioning_with_object_tags(scenes, tmp_path):
  """Tags join the source: the layout puts them before the caption, the model trains and
  decodes from image + tags, and the inference API (given tag_ids) reproduces the predictions."""
  from unimo_jax.data.synthetic import scenes as synthetic
  from unimo_jax.data.formats.tokenizers import load_tokenizer
  from unimo_jax.inference import Pipeline
  config = task_config("caption", scenes, **{"task.object_tags": True, "data.max_tags": 8})
  metrics = driver.train_and_evaluate(config, tmp_path)
  curve = losses(tmp_path)
  assert np.mean(curve[-5:]) < 0.85 * np.mean(curve[:3]) and metrics["CIDEr-D"] >= 0
  tokenizer = load_tokenizer(str(scenes / "tokenizer.model"))
  task = make_task(config.copy_and_resolve_references(), tmp_path)
  record = ShardSource(scenes / "train" / "pair")[0]
  assert tokenizer.decode(record["tag_ids"]) == synthetic.object_tags(record["class_probs"])
  inputs = task.train_example(record, np.random.default_rng(0))["inputs"]
  n_tags = len(record["tag_ids"])
  np.testing.assert_array_equal(inputs["input_ids"][:n_tags], record["tag_ids"])
  assert inputs["input_ids"][8] == tokenizer.cls_id and not inputs["target_mask"][:8].any()
  np.testing.assert_array_equal(inputs["position_ids"][:n_tags], np.arange(2, 2 + n_tags))
  assert inputs["position_ids"][8] == 2  # the caption restarts at 2
  assert inputs["lm_positions"][0] == 8
  eval_source = ShardSource(scenes / "eval" / "pair")
  images = [eval_source[i] for i in range(2)]
  pipe = Pipeline.load(tmp_path)
  assert pipe.caption(images) == [r["caption"] for r in predictions(tmp_path)[:2]]
  with pytest.raises(ValueError, match="tag_ids"):
    pipe.caption([{k: v for k, v in images[0].items() if k != "tag_ids"}])
  with pytest.raises(DataError, match="needs 'tag_ids'"):
    task.train_example({k: v for k, v in record.items() if k != "tag_ids"}, None)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["caption", "snli_ve"])
def test_villa_fine_tunes_train(name, scenes, tmp_path):
  """With task.adversarial.type 'villa' the tiny caption / SNLI-VE fine-tunes lower their loss
  and log the perturbed branches' losses and KL terms."""
  config = task_config(name, scenes, **{
      "task.adversarial.type": "villa", "task.adversarial.steps": 2, "steps": 16,
      "optimizer.learning_rate": LEARNING_RATE.get(name, 2e-3)})
  driver.train_and_evaluate(config, tmp_path)
  train = [r for r in read_metric_rows(tmp_path) if r["split"] == "train"]
  assert np.mean([r["total_loss"] for r in train[-3:]]) < np.mean(
      [r["total_loss"] for r in train[:3]])
  last = train[-1]
  for key in ("text_delta_loss", "region_delta_loss", "text_delta_kl", "region_delta_kl",
              "clean_loss"):
    assert np.isfinite(last[key]), key
  assert last["text_delta_kl"] > 0 and last["region_delta_kl"] > 0


@pytest.mark.slow
def test_retrieval_negatives_from_the_training_set(scenes, tmp_path):
  """UNIMO's reader: each example carries its own negatives, n other images (with its caption)
  and n captions of other images, never of its own image; the fine-tune trains on them."""
  config = task_config("retrieval", scenes, **{"task.negative_source": "train_set",
                                               "task.negatives": 3, "steps": 12})
  task = make_task(config.copy_and_resolve_references(), tmp_path)
  source = task.source("train")
  record = source[0]
  rng = np.random.default_rng(0)
  negatives = task.sampled_negatives(record, rng)
  assert len(negatives) == 6
  assert all(str(r["image_id"]) != str(record["image_id"]) for r in negatives)
  example = task.train_example(record, np.random.default_rng(1))
  n_text = config.data.max_caption_length
  assert example["input_ids"].shape == (4, n_text)
  assert example["image"]["region_features"].shape[0] == 4
  own = task.pair_inputs(record)
  np.testing.assert_array_equal(example["input_ids"][0], own["input_ids"])
  np.testing.assert_array_equal(example["image"]["region_features"][0], own["region_features"])
  driver.train_and_evaluate(config, tmp_path / "run")
  curve = losses(tmp_path / "run")
  assert np.mean(curve[-3:]) < np.mean(curve[:3])


def _write_tsv(path, header, rows):
  path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n", encoding="utf-8")
  return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("dialog", [False, True])
def test_seq2seq_columns_and_dialog_train_and_stop_on_mask(dialog, scenes, tmp_path):
  """Two source columns (or a dialog with a knowledge column, role and turn tables) train; the
  targets end with [MASK]; decoding ends hypotheses at [MASK] (a model whose LM bias favours
  [MASK] stops right after min_length, with [MASK] as the last token)."""
  words = ["red", "blue", "green", "circle", "square", "left", "right", "small", "large"]
  rng = np.random.default_rng(0)
  rows = []
  for _ in range(24):
    a, b = rng.choice(words, 3), rng.choice(words, 2)
    if dialog:
      turns = " [SEP] ".join(" ".join(rng.choice(words, 2)) for _ in range(rng.integers(1, 4)))
      rows.append([" ".join(a), turns, " ".join(b[::-1])])
    else:
      rows.append([" ".join(a), " ".join(b), " ".join([*b, a[0]])])
  header = ["knowledge", "src", "tgt"] if dialog else ["passage", "answer", "tgt"]
  path = _write_tsv(tmp_path / "train.tsv", header, rows)
  overrides = {"data.train_dir": path, "data.eval_dir": path,
               "data.tokenizer": str(scenes / "tokenizer.model"), "steps": 12,
               "decode.min_length": 2}
  if dialog:
    overrides.update({"task.dialog": True, "model.role_type_size": 3,
                      "model.turn_type_size": 16})
  config = task_config("seq2seq", scenes, **overrides)
  workdir = tmp_path / "run"
  metrics = driver.train_and_evaluate(config, workdir)
  assert metrics["examples"] == 12
  curve = losses(workdir)
  assert np.mean(curve[-3:]) < np.mean(curve[:3])
  task = make_task(config.copy_and_resolve_references(), workdir)
  special = task.special
  record = task.source("train")[0]
  inputs = task.train_example(record, None)["inputs"]
  n = int(inputs["lm_weights"].sum())
  assert inputs["lm_labels"][n - 1] == special["mask"]
  assert special["sep"] not in inputs["lm_labels"][:n].tolist()
  if dialog:
    assert "role_embedding" in str(jax.tree_util.tree_structure(task.boxed_params(
        jax.random.key(0))))
    assert inputs["role_ids"][1] == 2 and inputs["turn_ids"][1] == 0  # the knowledge block
  else:  # the answer column restarts its positions at 3
    second = 1 + len(record["src_ids"][0]) + 1
    assert inputs["input_ids"][second - 1] == special["sep"]
    assert inputs["position_ids"][second] == 3
  params = jax.jit(lambda k: flax.linen.unbox(task.boxed_params(k)))(jax.random.key(0))
  bias = params["backbone"]["lm_head"]["mask_lm_out_bias"]
  params["backbone"]["lm_head"]["mask_lm_out_bias"] = bias.at[special["mask"]].set(1e4)
  rows = [task.eval_row(r) for r in task.source("eval")[:3]]
  out = task.batched(jax.jit(task.eval_fn()), params, rows)
  assert np.all(np.asarray(out["lengths"])[:, 0] == 3)
  assert np.all(np.asarray(out["sequences"])[:, 0, 2] == special["mask"])


@pytest.mark.slow
def test_glue_regression_and_resume_equals_uninterrupted(scenes, tmp_path):
  overrides = {"task.synthetic": "similarity", "task.labels": (), "steps": 8}
  whole = driver.train_and_evaluate(task_config("glue", scenes, **overrides), tmp_path / "whole")
  assert {"pearson", "spearman", "mse"} <= set(whole)
  driver.train_and_evaluate(task_config("glue", scenes, **dict(overrides, steps=4)),
                            tmp_path / "split")
  resumed = driver.train_and_evaluate(task_config("glue", scenes, **overrides), tmp_path / "split")
  assert resumed["mse"] == pytest.approx(whole["mse"], rel=1e-5)
  np.testing.assert_allclose(losses(tmp_path / "split")[4:], losses(tmp_path / "whole")[4:],
                             rtol=1e-5)


@pytest.mark.slow
def test_epochs_set_the_run_length_from_the_training_set(scenes, tmp_path):
  """epochs = 1.5 and warm-up proportion 0.25: the run trains 1.5 x records // batch steps with
  a quarter of them warming up, and its config.json says so."""
  config = task_config("glue", scenes, **{"epochs": 1.5, "optimizer.warmup_proportion": 0.25})
  records = make_task(config.copy_and_resolve_references(), tmp_path).train_examples()
  driver.train_and_evaluate(config, tmp_path / "run")
  steps = int(1.5 * records // config.batch_size)
  written = json.loads((tmp_path / "run" / "config.json").read_text())
  assert written["steps"] == steps != config.steps
  assert written["optimizer"]["warmup_steps"] == int(steps * 0.25)
  assert max(training_losses(tmp_path / "run")) == steps


@pytest.mark.slow
def test_diverging_fine_tune_stops_with_a_message_and_keeps_the_last_good_checkpoint(
    scenes, tmp_path):
  """A learning rate that overflows the parameters: step 1 is finite and saved, step 2's loss is
  not; the run stops at the non-finite step with exit 2, a one-line message and no traceback."""
  import subprocess
  import sys
  root = pathlib.Path(__file__).resolve().parent.parent
  args = [sys.executable, "-m", "unimo_jax.main", "--config=configs/glue.py:tiny",
          f"--workdir={tmp_path}", f"--config.data.synthetic_dir={scenes}", "--config.steps=4",
          "--config.batch_size=16", "--config.data.synthetic_train_scenes=16",
          "--config.data.synthetic_eval_scenes=12", "--config.checkpoint_every=1",
          "--config.async_checkpoints=False", "--config.optimizer.warmup_steps=0",
          "--config.optimizer.learning_rate=1e38"]
  result = subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  assert "error: step 2: non-finite loss" in result.stderr and "Traceback" not in result.stderr
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1"]


def _randomly_initialised(config, workdir):
  """(task, its {'backbone', 'head'} params from random initialisation)."""
  import flax.linen as nn
  task = make_task(config, workdir)
  return task, nn.unbox(task.boxed_params(jax.random.key(0)))


def test_retrieval_scores_sharded_equal_one_device(scenes, tmp_path):
  from unimo_jax.parallel import make_mesh
  config = task_config("retrieval", scenes)
  single, params = _randomly_initialised(config, tmp_path)
  images, texts, text_image, _ = single._eval_rows("eval")
  expected = single.similarity(params, images[:5], texts[:7])
  mesh = make_mesh({"data": 4, "fsdp": 2, "tensor": 1})
  sharded = make_task(config, tmp_path, mesh)
  with jax.set_mesh(mesh):
    found = sharded.similarity(params, images[:5], texts[:7])
  assert found.shape == (5, 7)
  np.testing.assert_allclose(found, expected, atol=1e-5)
  assert np.std(found) > 1e-4  # scores differ across pairs: the comparison is not vacuous


def test_retrieval_reranking_scores_only_the_zero_shot_candidates(scenes, tmp_path):
  task, params = _randomly_initialised(task_config("retrieval", scenes), tmp_path)
  images, texts, _, _ = task._eval_rows("eval")
  zero_shot = task.zero_shot_similarity(params, images, texts)
  candidates = task.rerank_candidates(zero_shot, 10)
  for i in range(len(images)):  # each image's 10 nearest texts, each text's 10 nearest images
    assert candidates[i, np.argsort(-zero_shot[i])[:10]].all()
  for t in range(len(texts)):
    assert candidates[np.argsort(-zero_shot[:, t])[:10], t].all()
  full = task.similarity(params, images, texts)
  reranked = task.similarity(params, images, texts, candidates)
  np.testing.assert_allclose(reranked[candidates], full[candidates], atol=1e-6)
  assert np.all(np.isneginf(reranked[~candidates])) and (~candidates).any()
  with pytest.raises(ValueError, match="rerank_top_k"):
    task.rerank_candidates(zero_shot, 5)


def test_circle_loss_by_hand():
  from unimo_jax.tasks.retrieval import circle_loss
  sp, sn, m, g = 0.5, np.array([0.4, -0.5]), 0.2, 2.0
  a_p, a_n = max(1 + m - sp, 0), np.maximum(sn + m, 0)
  expected = np.log1p(np.sum(np.exp(g * a_n * (sn - m))) * np.exp(-g * a_p * (sp - (1 - m))))
  found = circle_loss(np.array([sp]), sn[None], m, g)
  np.testing.assert_allclose(np.asarray(found), [expected], rtol=1e-6)


@pytest.mark.slow
def test_inference_api_reproduces_the_task_predictions(trained_task):
  from unimo_jax.inference import Pipeline
  caption_dir, vqa_dir = trained_task("caption")[1], trained_task("vqa")[1]
  pipe = Pipeline.load(caption_dir)
  source = ShardSource(pipe.task.data_paths["eval"])
  written = predictions(caption_dir)
  records = [source[i] for i in range(3)]
  assert pipe.caption(records) == [r["caption"] for r in written[:3]]
  texts = [r["caption"] for r in records]
  ranked = pipe.rank_captions(records[1], texts)
  scores = pipe.scores([records[1]], texts)[0]
  assert [t for t, _ in ranked] == [texts[i] for i in np.argsort(-scores, kind="stable")]
  assert [i for i, _ in pipe.rank_images(texts[0], records)] == list(
      np.argsort(-pipe.scores(records, [texts[0]])[:, 0], kind="stable"))

  vqa = Pipeline.load(vqa_dir)
  source = ShardSource(vqa.task.data_paths["eval"])
  for record, row in zip([source[i] for i in range(3)], predictions(vqa_dir)):
    answer, probability = vqa.answer(record, record["caption"])
    assert answer == row["answer"] and 0.0 < probability < 1.0
  with pytest.raises(ValueError, match="VQA workdir"):
    pipe.answer(records[0], "what colour is it ?")


# ---- bad input --------------------------------------------------------------------------------

def _synthetic_paths(config, workdir):
  """The synthetic task's data paths; the config then names them as a user's data would be."""
  paths = make_task(config.copy_and_resolve_references(), workdir).data_paths
  config.data.tokenizer = paths["tokenizer"]
  config.data.eval_dir = paths["eval"]
  return paths


def _copy_with(source_dir, out_dir, edit):
  source = ShardSource(source_dir)
  rows = [edit(i, source[i]) for i in range(len(source))]
  write_examples(out_dir, "pair", [r for r in rows if r is not None],
                 region_feature_dim=source.meta.get("region_feature_dim"),
                 num_classes=source.meta.get("num_classes"))
  return str(out_dir)


@pytest.mark.slow
def test_caption_images_without_regions_are_counted_skips(scenes, tmp_path):
  def strip_first(i, r):
    if i == 0:
      r = dict(r, region_features=r["region_features"][:0], boxes=r["boxes"][:0],
               class_probs=r["class_probs"][:0])
    return r
  eval_dir = _copy_with(scenes / "eval" / "pair", tmp_path / "eval", strip_first)
  train_dir = _copy_with(scenes / "train" / "pair", tmp_path / "train", strip_first)
  config = task_config("caption", scenes, steps=2)
  config.data.train_dir, config.data.eval_dir = train_dir, eval_dir
  config.data.tokenizer = str(scenes / "tokenizer.model")
  metrics = driver.train_and_evaluate(config, tmp_path / "work")
  assert metrics["skipped"] == {"train_unusable": 1, "eval_images_without_regions": 1}
  assert metrics["images"] == 11  # 12 evaluated images less the skipped one


@pytest.mark.slow
def test_vqa_questions_without_a_vocabulary_answer_are_counted_skips(scenes, tmp_path):
  config = task_config("vqa", scenes, steps=2)
  paths = _synthetic_paths(config, tmp_path)
  rare = lambda i, r: dict(r, answers=[f"zebra {i}"] * 4 + [f"giraffe {i}"] * 6) if i < 3 else r
  config.data.train_dir = _copy_with(paths["train"], tmp_path / "train", rare)
  config.task.answer_min_count = 7  # given 4 and 6 times: out of the vocabulary
  metrics = driver.train_and_evaluate(config, tmp_path / "work")
  assert metrics["skipped"] == {"train_unusable": 3}
  answers = json.loads((tmp_path / "work" / "answers.json").read_text())
  assert not any("zebra" in a or "giraffe" in a for a in answers) and "2" in answers


def test_empty_eval_split_is_a_named_error(scenes, tmp_path):
  config = task_config("snli_ve", scenes, steps=1)
  paths = _synthetic_paths(config, tmp_path)
  config.data.train_dir = paths["train"]
  config.data.eval_dir = _copy_with(paths["eval"], tmp_path / "empty", lambda i, r: None)
  with pytest.raises(DataError, match="empty split"):
    driver.train_and_evaluate(config, tmp_path / "work")


def test_glue_label_outside_the_label_set_is_named_or_skipped(scenes, tmp_path):
  train = tmp_path / "train.tsv"
  rows = ["a red square\ta red square\t1", "a blue ring\ta red ring\tmaybe"] * 8
  train.write_text("text_a\ttext_b\tlabel\n" + "\n".join(rows) + "\n")
  config = task_config("glue", scenes, steps=1)
  config.data.train_dir = config.data.eval_dir = str(train)
  config.data.tokenizer = str(scenes / "tokenizer.model")
  with pytest.raises(DataError, match=r"line 3: label 'maybe' is not one of task.labels"):
    driver.train_and_evaluate(config, tmp_path / "a")
  config.data.skip_bad_records = True
  metrics = driver.train_and_evaluate(config, tmp_path / "b")
  assert metrics["skipped"] == {"train_bad_label": 8, "eval_bad_label": 8}
  assert metrics["examples"] == 8


def test_unknown_task_and_bad_batch_are_config_errors(scenes, tmp_path):
  config = task_config("glue", scenes, batch_size=12)
  with pytest.raises(ConfigError, match="batch_size: 12"):
    driver.train_and_evaluate(config, tmp_path)
  config = task_config("glue", scenes)
  config.task.name = "nope"
  with pytest.raises(ConfigError, match=r"task.name: expected one of \[.*'caption'.*\], found"):
    driver.train_and_evaluate(config, tmp_path)


@pytest.mark.parametrize("args,message", [
    (["--config=configs/glue.py:tiny", "--config.task.bogus=1"], "unknown config field"),
    (["--config=configs/glue.py:tiny", "--mode=check"], "--mode=check is for pretraining"),
    (["--mode=predict"], "--mode=predict needs a task config"),
])
@pytest.mark.slow
def test_command_line_errors_exit_cleanly(args, message, tmp_path):
  import pathlib
  import subprocess
  import sys
  root = pathlib.Path(__file__).resolve().parent.parent
  result = subprocess.run([sys.executable, "-m", "unimo_jax.main", f"--workdir={tmp_path / 'w'}",
                           *args], cwd=root, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  assert message in result.stderr and "Traceback" not in result.stderr
  assert not (tmp_path / "w" / "checkpoints").exists()


@pytest.mark.slow
def test_two_processes_train_and_evaluate_like_one(scenes, tmp_path):
  """jax.distributed with 2 processes x 2 devices gives the losses, metrics and predictions of one
  process x 4 devices: each process feeds its rows in training, and evaluation places the same
  host batch from every process and gathers the outputs."""
  import os
  import pathlib
  import socket
  import subprocess
  import sys
  root = pathlib.Path(__file__).resolve().parent.parent
  args = ["-m", "unimo_jax.main", "--config=configs/retrieval.py:tiny", "--config.steps=3",
          f"--config.data.synthetic_dir={scenes}", "--config.data.eval_limit=8",
          "--config.batch_size=8", "--config.task.negatives=3", "--config.log_every=1",
          "--config.eval_batch=8", "--config.async_checkpoints=False"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="4")
  env.pop("XLA_FLAGS", None)
  one = subprocess.run([sys.executable, *args, f"--workdir={tmp_path / 'one'}"], cwd=root,
                       env=env, capture_output=True, text=True, timeout=600)
  assert one.returncode == 0, one.stderr[-3000:]
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    address = f"127.0.0.1:{s.getsockname()[1]}"
  env["JAX_NUM_CPU_DEVICES"] = "2"
  procs = [subprocess.Popen(
      [sys.executable, *args, f"--workdir={tmp_path / 'two'}",
       f"--config.distributed.coordinator_address={address}",
       "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}"],
      cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
  np.testing.assert_allclose(losses(tmp_path / "two"), losses(tmp_path / "one"), rtol=1e-5)
  a = json.loads((tmp_path / "one" / "eval_metrics.json").read_text())
  b = json.loads((tmp_path / "two" / "eval_metrics.json").read_text())
  assert a.keys() == b.keys() and a["images"] == 8
  for key in a:
    assert b[key] == pytest.approx(a[key], abs=1e-6), key
  assert predictions(tmp_path / "two") == predictions(tmp_path / "one")


@pytest.mark.slow
def test_vqa_from_a_tfds_build_trains_exactly_as_from_shards(scenes, tmp_path):
  """The synthetic VQA shards written out as VQA v2's files (questions / annotations JSONs and
  a bottom-up TSV), prepared by the unimo_vqa_v2 builder and fine-tuned from tfds:... splits:
  the same losses, accuracy and predictions as from the shards (questions tokenized at read)."""
  from data_fixtures import regions_tsv, write_vqa
  from unimo_jax.data.formats import tfds_builders
  config = task_config("vqa", scenes, steps=4)
  paths = _synthetic_paths(config, tmp_path)
  config.data.train_dir = paths["train"]
  rows = {split: [source[i] for i in range(len(source))]
          for split, source in (("train", ShardSource(paths["train"])),
                                ("validation", ShardSource(paths["eval"])))}
  manual = tmp_path / "vqa_files"
  manual.mkdir()
  write_vqa(manual, rows)
  regions_tsv(manual / "features.tsv", rows["train"] + rows["validation"])
  tfds_builders.build("unimo_vqa_v2", manual, tmp_path / "tfds")
  from_shards = driver.train_and_evaluate(config, tmp_path / "shards")
  config.data.train_dir, config.data.eval_dir = "tfds:unimo_vqa_v2@train", "tfds:unimo_vqa_v2"
  config.data.tfds_data_dir = str(tmp_path / "tfds")
  from_tfds = driver.train_and_evaluate(config, tmp_path / "from_tfds")
  # Same inputs (float16 features stored as float32, the same ids), same programs: equal to
  # float32 rounding of a different reduction order at most.
  np.testing.assert_allclose(losses(tmp_path / "from_tfds"), losses(tmp_path / "shards"),
                             rtol=1e-5)
  assert from_tfds["accuracy"] == pytest.approx(from_shards["accuracy"], abs=1e-6)
  assert [r["answer"] for r in predictions(tmp_path / "from_tfds")] == \
      [r["answer"] for r in predictions(tmp_path / "shards")]
