"""Writes the synthetic-scenes dataset: tokenizer, text / image / pair shards, held-out pairs.

  python -m unimo_jax.data synthetic --out=DIR [--pairs=50000 --eval-pairs=1000 ...]

Layout:
  DIR/tokenizer.model          sentencepiece, trained on the generated text
  DIR/train/{text,image,pair}  text-only descriptions, image-only scenes, image-caption pairs
  DIR/eval/pair                held-out pairs: no scene of train occurs here, and no two held-out
                               scenes are the same, so retrieval over them has one right answer
Pairs carry detector object tags (tag_ids: each region's top class name), paraphrases and
rule-based hard negatives, retrieved texts and retrieved images
(detected-object overlap with the image-only scenes). The text corpus holds a full description of
every train pair's scene besides random ones; a train pair's retrieved text is the description of
its own scene, a true single-modal positive (held-out scenes stay out of the corpus). The TF-IDF
retrieval of `augment` is for real corpora, where no scene graph says which text matches.
"""

import logging
import os
import pathlib
import shutil
import time

import numpy as np

from unimo_jax.data.formats import augment
from unimo_jax.data.synthetic import scenes as synthetic
from unimo_jax.data.synthetic import task_text as synthetic_tasks
from unimo_jax.data.formats.records import ShardWriter
from unimo_jax.data.formats.tokenizers import SentencePieceTokenizer


def _image_fields(scene, featurizer, rng, image_id):
  return dict(featurizer(scene, rng), image_id=image_id, pixels=synthetic.render(scene))


def encode_nested(tokenizer, nested) -> list:
  """[[text, ...], ...] -> [[ids, ...], ...] with one batched tokenizer call."""
  flat = tokenizer.encode_batch([t for texts in nested for t in texts])
  out, start = [], 0
  for texts in nested:
    out.append(flat[start:start + len(texts)])
    start += len(texts)
  return out


def twin_pairs_of(train) -> tuple:
  """The hard-negative images of the training scenes as extra training pairs: ([(scene index,
  twin scene)], {scene index: [pair indices of its twins]}), the twins' pair indices following
  the len(train) scenes. A twin whose identity falls in the held-out split is left out."""
  extra, links = [], {}
  for i, scene in enumerate(train):
    for twin in synthetic.twin_scenes(scene):
      if synthetic.split_of(twin) == "train":
        links.setdefault(i, []).append(len(train) + len(extra))
        extra.append((i, twin))
  return extra, links


def write_synthetic(out_dir, *, pairs=50_000, eval_pairs=1_000, images=10_000, texts=20_000,
                    feature_dim=32, seed=0, vocab_size=128, retrieved=2, records_per_shard=10_000,
                    twin_scenes=False, log=print) -> dict:
  """Generates and writes everything; returns {name: metadata}.

  twin_scenes: also write each training scene's hard-negative images (its mirror and a binding
  swap, synthetic.twin_scenes) as training pairs after the others, linked both ways by
  `twin_pairs` (pair indices), for data.cmcl_twin_fraction to co-batch. They draw from their own
  random stream and stay out of the tokenizer's training text, so every other record, the
  tokenizer and the held-out pairs are the same with or without them."""
  start = time.perf_counter()
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  featurizer = synthetic.RegionFeaturizer(feature_dim, seed=seed + 1)
  train = list(synthetic.generate_scenes(pairs, seed + 2, "train"))
  held_out = list(synthetic.generate_scenes(eval_pairs, seed + 3, "eval", unique=True))
  image_only = list(synthetic.generate_scenes(images, seed + 4, "train"))
  own = [synthetic.describe_scene(scene) for scene in train]  # retrieved text of train pair i
  corpus = own + [synthetic.scene_description(rng) for _ in range(texts)]
  log(f"sampled {len(train)} + {len(held_out)} pairs, {len(image_only)} images, "
      f"{len(corpus)} texts in {time.perf_counter() - start:.1f} s")

  def texts_of(scenes, r):
    return ([synthetic.caption(s) for s in scenes], [synthetic.paraphrases(s) for s in scenes],
            [synthetic.hard_negatives(s, r) for s in scenes])

  train_text = texts_of(train, rng)
  eval_text = texts_of(held_out, rng)
  # Held-out pairs also get binding-swap twins (no random draw: the training data is the same
  # with or without them); no held-out twin is the caption of another held-out scene.
  eval_captions = set(eval_text[0])
  for negatives, scene in zip(eval_text[2], held_out):
    negatives[:] = [t for t in negatives + synthetic.binding_swaps(scene)
                    if t not in eval_captions]
  vocab_lines = (corpus + train_text[0] + [p for ps in train_text[1] for p in ps]
                 + synthetic_tasks.vocabulary_lines(seed))  # so fine-tuning text is in vocabulary
  tokenizer = SentencePieceTokenizer.train(vocab_lines, vocab_size=vocab_size,
                                           model_type="word", out_path=out / "tokenizer.model")
  vocab = dict(tokenizer.describe(), file="tokenizer.model")
  common = dict(vocabulary=vocab, records_per_shard=records_per_shard, source="synthetic scenes",
                seed=seed)
  image_meta = dict(region_feature_dim=feature_dim, num_classes=synthetic.NUM_CLASSES,
                    image_size=synthetic.CANVAS)

  metas = {}
  corpus_ids = tokenizer.encode_batch(corpus)
  with ShardWriter(out / "train" / "text", "text", **common) as w:
    for ids in corpus_ids:
      w.write({"input_ids": ids})
  metas["train/text"] = w.meta

  image_records = [_image_fields(s, featurizer, rng, f"image-{i}") for i, s in enumerate(image_only)]
  with ShardWriter(out / "train" / "image", "image", **common, **image_meta) as w:
    for record in image_records:
      w.write(record)
  metas["train/image"] = w.meta
  image_objects = [augment.detected_objects(r["class_probs"]) for r in image_records]

  twins, links = twin_pairs_of(train) if twin_scenes else ([], {})
  twin_rng = np.random.default_rng(seed + 7)
  twin_text = texts_of([t for _, t in twins], twin_rng)
  for split, scenes, (captions, paras, negatives) in (("train", train, train_text),
                                                       ("eval", held_out, eval_text)):
    records = [_image_fields(s, featurizer, rng, f"{split}-{i}") for i, s in enumerate(scenes)]
    retrieved_texts = [[corpus_ids[i]] if split == "train" else [] for i in range(len(scenes))]
    if split == "train" and twins:
      records += [_image_fields(t, featurizer, twin_rng, f"train-{len(scenes) + k}-twin-of-{i}")
                  for k, (i, t) in enumerate(twins)]
      scenes = scenes + [t for _, t in twins]
      captions, paras, negatives = (a + b for a, b in zip((captions, paras, negatives), twin_text))
      retrieved_texts += [[] for _ in twins]
      for i, record in enumerate(records):
        record["twin_pairs"] = np.asarray(links.get(i, []) if i < len(train)
                                          else [twins[i - len(train)][0]], np.int64)
    near_images = augment.retrieve_by_objects(
        [augment.detected_objects(r["class_probs"]) for r in records], image_objects, retrieved)
    caption_ids = tokenizer.encode_batch(captions)
    tag_ids = tokenizer.encode_batch([synthetic.object_tags(r["class_probs"]) for r in records])
    paraphrase_ids = encode_nested(tokenizer, paras)
    negative_ids = encode_nested(tokenizer, negatives)
    with ShardWriter(out / split / "pair", "pair", images_dir="../../train/image", **common,
                     **image_meta, **({"twin_scenes": len(twins)} if split == "train" and twins
                                      else {})) as w:
      for i, record in enumerate(records):
        w.write(dict(
            record, caption=captions[i], scene=synthetic.scene_identity(scenes[i]),
            caption_ids=caption_ids[i], tag_ids=tag_ids[i], paraphrase_ids=paraphrase_ids[i],
            hard_negative_ids=negative_ids[i],
            retrieved_text_ids=retrieved_texts[i],
            retrieved_images=near_images[i][near_images[i] >= 0]))
    metas[f"{split}/pair"] = w.meta
  log(f"wrote the synthetic dataset to {out} in {time.perf_counter() - start:.1f} s")
  return metas


def ensure_synthetic_scenes(root, *, pairs: int, feature_dim: int, seed: int,
                            twin_scenes: bool = False) -> pathlib.Path:
  """Generates the synthetic scenes into `root` unless they are there already (safe when several
  processes race: each writes a scratch copy and the first rename wins); returns `root`. Scenes
  already there must have been written with the same twin_scenes."""
  root = pathlib.Path(root)
  if (root / "eval" / "pair" / "metadata.json").exists():
    from unimo_jax.data.formats.records import read_metadata
    from unimo_jax.errors import DataError
    has_twins = bool(read_metadata(root / "train" / "pair").get("twin_scenes"))
    if has_twins != bool(twin_scenes):
      raise DataError(f"{root}: the synthetic scenes there were written "
                      f"{'with' if has_twins else 'without'} twin scenes, the config asks for "
                      f"data.synthetic_twin_scenes={bool(twin_scenes)}; use another "
                      "data.synthetic_dir")
  if not (root / "eval" / "pair" / "metadata.json").exists():
    scratch = root.with_name(f"{root.name}.tmp{os.getpid()}")
    print(f"generating the synthetic scenes into {root} ...", flush=True)
    write_synthetic(scratch, pairs=pairs, eval_pairs=min(1000, max(pairs // 10, 50)),
                    images=max(pairs // 5, 100), texts=max(pairs * 2 // 5, 100),
                    feature_dim=feature_dim, seed=seed, twin_scenes=twin_scenes)
    if not (root / "eval" / "pair" / "metadata.json").exists():
      shutil.rmtree(root, ignore_errors=True)
      scratch.rename(root)
    else:  # another process finished first
      shutil.rmtree(scratch, ignore_errors=True)
  return root


if __name__ == "__main__":
  logging.basicConfig(level=logging.INFO)
  write_synthetic("/tmp/synthetic_scenes")
