"""Small generated datasets and detector files for the data tests."""

import base64
import json

import numpy as np

from unimo_jax.data.formats.records import write_examples

SPECIAL = {"cls": 0, "pad": 1, "sep": 2, "unk": 3, "mask": 4}
VOCAB = 64
DIM, CLASSES = 8, 6


def image_example(rng, index, boxes=3):
  xy = rng.uniform(0, 40, size=(boxes, 2))
  return {
      "image_id": f"img-{index}", "image_w": 64, "image_h": 48,
      "region_features": rng.normal(size=(boxes, DIM)).astype(np.float32),
      "boxes": np.concatenate([xy, xy + rng.uniform(5, 20, size=(boxes, 2))], 1).astype(np.float32),
      "class_probs": rng.dirichlet(np.ones(CLASSES), size=boxes).astype(np.float32),
  }


def write_datasets(root, n_text=40, n_image=24, n_pair=32, seed=0):
  """Text records hold [index + 10] * length so a record is recognisable after batching."""
  rng = np.random.default_rng(seed)
  text = [{"input_ids": np.full(5 + i % 7, 10 + i, np.int32)} for i in range(n_text)]
  images = [image_example(rng, i, boxes=1 + i % 4) for i in range(n_image)]
  pairs = []
  for i in range(n_pair):
    pairs.append(dict(image_example(rng, 100 + i, boxes=2 + i % 3),
                      caption_ids=rng.integers(5, VOCAB, 4 + i % 5).astype(np.int32),
                      paraphrase_ids=[rng.integers(5, VOCAB, 4).astype(np.int32)],
                      hard_negative_ids=[rng.integers(5, VOCAB, 5).astype(np.int32)] * (i % 3),
                      retrieved_images=np.array([i % n_image, (i + 1) % n_image], np.int64)))
  meta = dict(region_feature_dim=DIM, num_classes=CLASSES, records_per_shard=10)
  write_examples(root / "text", "text", text, records_per_shard=10)
  write_examples(root / "image", "image", images, **meta)
  write_examples(root / "pair", "pair", pairs, **meta)
  return root


def small_data_config(root):
  from unimo_jax.data.pipeline.examples import data_config
  cfg = data_config()
  cfg.text_dir, cfg.image_dir, cfg.pair_dir = (str(root / k) for k in ("text", "image", "pair"))
  cfg.max_text_length, cfg.max_caption_length, cfg.max_regions = 16, 12, 4
  cfg.max_predictions = 4
  cfg.num_threads = 2
  return cfg


def trees_equal(a, b) -> bool:
  """Same tree structure and every leaf array-equal."""
  import jax
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))) and \
      jax.tree.structure(a) == jax.tree.structure(b)


# ---- detector files (bottom-up-attention TSVs) ------------------------------------------------

DETECTOR_DIM, DETECTOR_CLASSES = 6, 5


def b64(array):
  return base64.b64encode(np.asarray(array, np.float32).tobytes()).decode()


def detector_fields(rng, n):
  boxes = np.concatenate([rng.uniform(0, 50, (n, 2)), rng.uniform(60, 90, (n, 2))], 1)
  return boxes, rng.normal(size=(n, DETECTOR_DIM)), rng.dirichlet(np.ones(DETECTOR_CLASSES), n)


def write_bua_tsv(path, rows):
  rng = np.random.default_rng(0)
  lines, truth = [], {}
  for image_id, n, with_probs in rows:
    boxes, feats, probs = detector_fields(rng, n)
    fields = [image_id, "100", "80", str(n), b64(boxes), b64(feats)] + ([b64(probs)] if with_probs
                                                                        else [])
    lines.append("\t".join(fields))
    truth[image_id] = (boxes, feats, probs)
  path.write_text("\n".join(lines) + "\n")
  return truth


VQA_FILES = {"train": ("v2_OpenEnded_mscoco_train2014_questions.json",
                       "v2_mscoco_train2014_annotations.json"),
             "validation": ("v2_OpenEnded_mscoco_val2014_questions.json",
                            "v2_mscoco_val2014_annotations.json"),
             "test": ("v2_OpenEnded_mscoco_test2015_questions.json", None)}  # VQA v2's names


def write_vqa(manual, splits):
  """VQA v2's JSONs, in its file names, of pair records {'image_id', 'caption', 'caption_id',
  'answers'}: splits as {split: records}, the test split without annotations."""
  for split, rows in splits.items():
    questions, annotations = VQA_FILES[split]
    (manual / questions).write_text(json.dumps({"questions": [
        {"image_id": r["image_id"], "question": r["caption"], "question_id": r["caption_id"]}
        for r in rows]}))
    if annotations:
      (manual / annotations).write_text(json.dumps({"annotations": [
          {"question_id": r["caption_id"], "image_id": r["image_id"],
           "answers": [{"answer": a, "answer_id": j + 1} for j, a in enumerate(r["answers"])]}
          for r in rows]}))


def regions_tsv(path, records):
  """A bottom-up TSV of each distinct image of `records`, in first-appearance order."""
  seen, lines = set(), []
  for r in records:
    if r["image_id"] in seen:
      continue
    seen.add(r["image_id"])
    lines.append("\t".join([r["image_id"], str(int(r["image_w"])), str(int(r["image_h"])),
                            str(len(r["boxes"])), b64(r["boxes"]),
                            b64(r["region_features"])]))
  path.write_text("\n".join(lines) + "\n")
