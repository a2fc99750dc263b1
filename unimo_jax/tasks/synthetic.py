"""Synthetic versions of every task, built from the synthetic scenes (nothing downloaded).

Under <synthetic_dir> (the pretraining scenes, so the tokenizer and region features match):
  train/pair, eval/pair       captioning (references: the caption and its paraphrases) and
                              retrieval (held-out scenes are unique, so one right answer)
  tasks/vqa/{train,eval}      pair shards: question in caption_ids, 10 annotator answers
  tasks/snli_ve/{train,eval}  pair shards: statement in caption_ids, label 0/1/2
                              (entailment / neutral / contradiction)
  tasks/text/{classify,similarity,rewrite}_{train,eval}.tsv
                              sentence-pair classification, regression and a seq2seq rewrite
Task scenes use their own seeds; eval scenes come from the held-out side of the scene split.
"""

import csv
import pathlib

import numpy as np

from unimo_jax.data import synthetic, synthetic_tasks
from unimo_jax.data.records import ShardWriter, read_metadata
from unimo_jax.data.tokenizers import load_tokenizer
from unimo_jax.paths import is_remote, local_dir

TEXT_TASKS = ("classify", "similarity", "rewrite")


def _scenes(count, seed, split):
  return list(synthetic.generate_scenes(count, seed, split, unique=split == "eval"))


def write_image_task(root, task, *, train_scenes, eval_scenes, seed, feature_dim, tokenizer):
  """VQA or SNLI-VE pair shards under root/tasks/<task>/{train,eval}."""
  featurizer = synthetic.RegionFeaturizer(feature_dim, seed=seed + 1)  # the pretraining features
  rng = np.random.default_rng(seed + 20)
  metas = {}
  for split, count, scene_seed in (("train", train_scenes, seed + 21),
                                   ("eval", eval_scenes, seed + 22)):
    out = pathlib.Path(root) / "tasks" / task / split
    with ShardWriter(out, "pair", region_feature_dim=feature_dim,
                     num_classes=synthetic.NUM_CLASSES, vocabulary=tokenizer.describe(),
                     task=task, source="synthetic scenes") as w:
      for i, scene in enumerate(_scenes(count, scene_seed, split)):
        image = dict(featurizer(scene, rng), image_id=f"{split}-{i}")
        if split == "eval":  # rendered pixels to look at (left out of train: ~12 KB a record)
          image["pixels"] = synthetic.render(scene)
        if task == "vqa":
          items = [(q, {"answers": answers, "question_type": kind})
                   for q, answers, kind in synthetic_tasks.vqa_questions(scene, rng)]
        else:
          items = [(s, {"label": label}) for s, label in
                   synthetic_tasks.entailment_statements(scene, rng)]
        for j, (text, fields) in enumerate(items):
          w.write(dict(image, caption=text, caption_ids=tokenizer.encode(text),
                       caption_id=f"{split}-{i}-{j}", **fields))
    metas[split] = w.meta
  return metas


def write_text_tasks(root, *, train_scenes, eval_scenes, seed):
  """TSVs with a header: classify/similarity 'text_a, text_b, label'; rewrite 'src, tgt'."""
  rng = np.random.default_rng(seed + 30)
  out = pathlib.Path(root) / "tasks" / "text"
  out.mkdir(parents=True, exist_ok=True)
  for split, count, scene_seed in (("train", train_scenes, seed + 31),
                                   ("eval", eval_scenes, seed + 32)):
    rows = {name: [] for name in TEXT_TASKS}
    for scene in _scenes(count, scene_seed, split):
      a, b, same, shared = synthetic_tasks.sentence_pair(scene, rng)
      rows["classify"].append((a, b, same))
      rows["similarity"].append((a, b, f"{shared:.1f}"))
      rows["rewrite"].append((synthetic.caption(scene), synthetic_tasks.rewrite_target(scene)))
    for name, lines in rows.items():
      header = ("src", "tgt") if name == "rewrite" else ("text_a", "text_b", "label")
      with open(out / f"{name}_{split}.tsv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(lines)


def _done(path) -> bool:
  try:
    read_metadata(path)
    return True
  except (FileNotFoundError, ValueError):
    return False


def prepare_synthetic_task_data(config, workdir) -> None:
  """Fills in config.data.{train_dir, eval_dir, tokenizer} with the synthetic version of
  config.task.name when config.data.train_dir is empty, generating what is missing."""
  from unimo_jax.train.loop import ensure_synthetic_scenes
  d = config.data
  if d.train_dir:
    if not d.tokenizer:
      from unimo_jax.train.loop import ConfigError
      raise ConfigError("data.tokenizer: expected the tokenizer of data.train_dir, found ''")
    return
  root = d.synthetic_dir
  init = config.init_from
  if not root and init and not is_remote(init) and (pathlib.Path(init) / "synthetic_scenes").is_dir():
    root = str(pathlib.Path(init) / "synthetic_scenes")  # the pretraining's scenes
  root = ensure_synthetic_scenes(root or local_dir(workdir, "synthetic_scenes"),
                                 pairs=int(d.synthetic_pairs),
                                 feature_dim=config.model.region_feature_dim, seed=config.seed)
  d.tokenizer = d.tokenizer or str(root / "tokenizer.model")
  task = config.task.name
  sizes = dict(train_scenes=int(d.synthetic_train_scenes), eval_scenes=int(d.synthetic_eval_scenes))
  if task in ("caption", "retrieval"):
    d.train_dir, d.eval_dir = str(root / "train" / "pair"), d.eval_dir or str(root / "eval" / "pair")
    return
  if task in ("vqa", "snli_ve"):
    base = root / "tasks" / task
    if not (_done(base / "train") and _done(base / "eval")):
      print(f"writing the synthetic {task} task into {base} ...", flush=True)
      write_image_task(root, task, seed=config.seed, feature_dim=config.model.region_feature_dim,
                       tokenizer=load_tokenizer(d.tokenizer), **sizes)
    d.train_dir, d.eval_dir = str(base / "train"), d.eval_dir or str(base / "eval")
    return
  base = root / "tasks" / "text"
  name = config.task.synthetic
  if name not in TEXT_TASKS:
    from unimo_jax.train.loop import ConfigError
    raise ConfigError(f"task.synthetic: expected one of {TEXT_TASKS}, found {name!r}")
  if not (base / f"{name}_eval.tsv").exists():
    print(f"writing the synthetic text tasks into {base} ...", flush=True)
    write_text_tasks(root, seed=config.seed, **sizes)
  d.train_dir = str(base / f"{name}_train.tsv")
  d.eval_dir = d.eval_dir or str(base / f"{name}_eval.tsv")
