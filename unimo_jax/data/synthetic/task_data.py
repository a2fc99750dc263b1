"""Writes the synthetic versions of the fine-tuning tasks next to the synthetic scenes (nothing
downloaded); each task picks its files (tasks/<task>.py: synthetic_paths).

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

from unimo_jax.data.synthetic import scenes as synthetic
from unimo_jax.data.synthetic import task_text as synthetic_tasks
from unimo_jax.data.formats.records import ShardWriter, read_metadata

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


def is_written(path) -> bool:
  """Whether `path` holds a complete dataset (its metadata, written last, is readable)."""
  try:
    read_metadata(path)
    return True
  except (FileNotFoundError, ValueError):
    return False


def image_task_paths(root, task, *, train_scenes, eval_scenes, seed, feature_dim,
                     tokenizer) -> dict:
  """{'train', 'eval'} shard directories of the synthetic VQA or SNLI-VE task, written on first
  use."""
  base = pathlib.Path(root) / "tasks" / task
  if not (is_written(base / "train") and is_written(base / "eval")):
    print(f"writing the synthetic {task} task into {base} ...", flush=True)
    write_image_task(root, task, train_scenes=train_scenes, eval_scenes=eval_scenes, seed=seed,
                     feature_dim=feature_dim, tokenizer=tokenizer)
  return {"train": str(base / "train"), "eval": str(base / "eval")}


def text_task_paths(root, name, *, train_scenes, eval_scenes, seed) -> dict:
  """{'train', 'eval'} TSVs of the synthetic text task `name` (one of TEXT_TASKS), written on
  first use."""
  if name not in TEXT_TASKS:
    raise ValueError(f"task.synthetic: expected one of {TEXT_TASKS}, found {name!r}")
  base = pathlib.Path(root) / "tasks" / "text"
  if not (base / f"{name}_eval.tsv").exists():
    print(f"writing the synthetic text tasks into {base} ...", flush=True)
    write_text_tasks(root, train_scenes=train_scenes, eval_scenes=eval_scenes, seed=seed)
  return {"train": str(base / f"{name}_train.tsv"), "eval": str(base / f"{name}_eval.tsv")}


def scene_pair_paths(root) -> dict:
  """{'train', 'eval'} of the scenes' own pairs (captioning and retrieval read them as they are)."""
  root = pathlib.Path(root)
  return {"train": str(root / "train" / "pair"), "eval": str(root / "eval" / "pair")}
