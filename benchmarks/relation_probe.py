"""Relation twins under CMCL alone: what an image encoder must be told to learn "left of".

  python benchmarks/relation_probe.py [--steps 1000] [--seeds 0,1] [--only mention+twins+text]

Trains the tiny Unimo model (2 layers, 64 wide, mean pooling, no dropout) on the synthetic
scenes with CMCL only (objectives.cmcl_loss: symmetric InfoNCE over the batch, plus each
caption's relation twin as an extra negative text where asked) and prints held-out i2t R@1 and
relation-twin accuracy (the image scores its caption above the caption with the relation
reversed; chance 0.5) for each variant:

  order     'none'     the regions as UNIMO reads them: features + boxes, no index (a set);
            'shuffled' a fixed vector per region slot added to the features, slots in random order;
            'mention'  the same vectors, slot 0 = the caption's first-named object, slot 1 the
                       second (the order the scene records happen to store): the image then
                       knows which object the caption's relation is about.
  twins     each scene's mirror image (the relation twin's picture) in the same batch;
  text      the relation-twin caption as an extra negative text of its image;
  textcon   a text-text term: caption vs its paraphrase "B is <inverse> of A" (positive) against
            the relation twin and the batch's other paraphrases.

One batch = 32 scenes and their 32 mirrors with twins, else 64 scenes; AdamW 1e-3 (warm-up 100,
cosine decay), b2 0.98, weight decay 0.01. Held-out: the first 1,000 unique eval scenes with a
relation (synthetic.generate_scenes(1000, 3, 'eval', unique=True)), regions in mention order for
'mention' (as in training) and random for 'shuffled'.
"""

import argparse
import itertools
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax

from unimo_jax.data.pipeline import examples
from unimo_jax.data.synthetic import scenes as synthetic
from unimo_jax.model import Unimo
from unimo_jax.model.presets import model_config
from unimo_jax.objectives import cmcl_loss

MAX_REGIONS, TEXT_LENGTH, FEATURE_DIM = 4, 20, 32
REGION_CONFIG = types.SimpleNamespace(max_regions=MAX_REGIONS)  # what region_fields reads
CLS, PAD, SEP = 0, 1, 2
WORDS = sorted(set(synthetic.SHAPES) | set(synthetic.COLOUR_NAMES) | set(synthetic.SIZES)
               | {"a", "is", "and", "left", "right", "of", "above", "below", "there"})
VOCAB = {w: i + 3 for i, w in enumerate(WORDS)}
VARIANTS = {  # name: (order, twins, text twin negatives, text-text term)
    "none+twins+text": ("none", True, True, False),
    "none+twins+text+textcon": ("none", True, True, True),
    "shuffled+twins+text": ("shuffled", True, True, False),
    "mention": ("mention", False, False, False),
    "mention+text": ("mention", False, True, False),
    "mention+twins": ("mention", True, False, False),
    "mention+twins+text": ("mention", True, True, False),
}


def token_ids(text):
  """[CLS] words [SEP] padded: [TEXT_LENGTH]."""
  ids = [CLS] + [VOCAB[w] for w in text.split()] + [SEP]
  return ids + [PAD] * (TEXT_LENGTH - len(ids))


def image_fields(scene, featurizer, slot_vectors, order, rng):
  """Regions of a scene as the model reads them (examples.region_fields: padded features,
  [x1, y1, x2, y2, area] locations, mask), region i moved to a random slot for 'shuffled', slot
  vectors added unless `order` is 'none'."""
  regions = examples.region_fields(featurizer(scene, rng), REGION_CONFIG, FEATURE_DIM,
                                   synthetic.NUM_CLASSES)
  feats, loc, mask = (np.array(regions[k]) for k in
                      ("region_features", "region_locations", "region_mask"))
  n = int(mask.sum())
  if order == "shuffled":
    slots = rng.permutation(n)
    feats[slots], loc[slots] = feats[:n].copy(), loc[:n].copy()
  if order != "none":
    feats[:n] += slot_vectors[:n]
  return feats, loc, mask


def batch_of(scenes, featurizer, slot_vectors, order, rng):
  """Images, captions, relation twins and first paraphrases of `scenes`."""
  images = [image_fields(s, featurizer, slot_vectors, order, rng) for s in scenes]
  image = {k: np.stack([x[i] for x in images]) for i, k in enumerate(
      ("region_features", "region_locations", "region_mask"))}
  texts = {
      "caption": [synthetic.caption(s) for s in scenes],
      "twin": [synthetic.caption(dict(s, relation=synthetic.INVERSE[s["relation"]]))
               for s in scenes],
      "paraphrase": [synthetic.paraphrases(s)[0] for s in scenes],
  }
  return image, {k: np.asarray([token_ids(t) for t in v], np.int32) for k, v in texts.items()}


def model_of():
  c = model_config("tiny")
  c.vocab_size = 64
  c.max_position_embeddings = TEXT_LENGTH + 2
  c.dropout_rate = c.attention_dropout_rate = 0.0
  c.pooling = "mean"
  return Unimo(c)


def run(variant, seed, steps, train, held_out, log_every):
  order, twins, text_twins, text_contrast = VARIANTS[variant]
  rng = np.random.default_rng(seed)
  featurizer = synthetic.RegionFeaturizer(FEATURE_DIM, seed=seed + 1)
  slot_vectors = np.random.default_rng(seed + 5).normal(size=(MAX_REGIONS, FEATURE_DIM))
  model = model_of()

  def sample():
    if twins:
      scenes = [train[i] for i in rng.choice(len(train), 32, replace=False)]
      scenes += [synthetic.mirrored_scene(s) for s in scenes]
    else:
      scenes = [train[i] for i in rng.choice(len(train), 64, replace=False)]
    return batch_of(scenes, featurizer, slot_vectors, order, rng)

  image, texts = sample()
  params = model.init(jax.random.key(seed), dict(image, input_ids=texts["caption"]))
  optimizer = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, 1e-3, 100, steps), b1=0.9,
                          b2=0.98, weight_decay=0.01)
  opt_state = optimizer.init(params)

  def embed(params, image, texts):
    out = model.apply(params, image, heads={"contrastive"})
    emb = {"image": out["image_embedding"]}
    for key, ids in texts.items():
      emb[key] = model.apply(params, {"input_ids": ids}, heads={"contrastive"})["text_embedding"]
    return emb, out["temperature"]

  def loss_fn(params, image, texts):
    emb, temperature = embed(params, image, texts)
    cmcl = {"image": emb["image"], "text": emb["caption"]}
    if text_twins:  # [batch, 1, dim]: the relation twin, a hard negative of its image
      ones = jnp.ones((emb["image"].shape[0], 1), bool)
      cmcl.update(extra_text=emb["twin"][:, None], extra_text_valid=ones,
                  extra_text_positive=~ones)
    loss, _ = cmcl_loss(cmcl, temperature)
    if text_contrast:  # caption rows x [paraphrases of the batch | own twin]
      logits = jnp.concatenate([emb["caption"] @ emb["paraphrase"].T,
                                jnp.sum(emb["caption"] * emb["twin"], -1, keepdims=True)], 1)
      labels = jnp.arange(logits.shape[0])
      loss = loss + optax.softmax_cross_entropy_with_integer_labels(
          logits / temperature, labels).mean()
    return loss

  @jax.jit
  def train_step(params, opt_state, image, texts):
    loss, grads = jax.value_and_grad(loss_fn)(params, image, texts)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  eval_image, eval_texts = batch_of(held_out, featurizer, slot_vectors, order,
                                    np.random.default_rng(99))
  eval_embed = jax.jit(embed)

  def evaluate(params):
    emb, _ = eval_embed(params, eval_image, eval_texts)
    img, cap, twin = (np.asarray(emb[k]) for k in ("image", "caption", "twin"))
    r1 = float(np.mean((img @ cap.T).argmax(1) == np.arange(len(img))))
    relation = float(np.mean(np.sum(img * cap, -1) > np.sum(img * twin, -1)))
    para = np.asarray(emb["paraphrase"])
    text_side = float(np.mean(np.sum(cap * para, -1) > np.sum(cap * twin, -1)))
    return r1, relation, text_side

  start, rows = time.perf_counter(), []
  for step in range(1, steps + 1):
    image, texts = sample()
    params, opt_state, loss = train_step(params, opt_state, image, texts)
    if step % log_every == 0 or step == steps:
      r1, relation, text_side = evaluate(params)
      rows.append((variant, seed, step, float(loss), r1, relation, text_side,
                   time.perf_counter() - start))
      print("| " + " | ".join(_cells(rows[-1])) + " |", flush=True)
  return rows


def _cells(row):
  variant, seed, step, loss, r1, relation, text_side, wall = row
  return [variant, str(seed), str(step), f"{loss:.3f}", f"{r1:.3f}", f"{relation:.3f}",
          f"{text_side:.3f}", f"{wall:.0f}"]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=1000)
  parser.add_argument("--seeds", default="0,1")
  parser.add_argument("--only", default="", help="comma-separated variants; default all: "
                      + ", ".join(VARIANTS))
  parser.add_argument("--log-every", type=int, default=500)
  args = parser.parse_args()
  variants = [v for v in args.only.split(",") if v] or list(VARIANTS)
  unknown = sorted(set(variants) - set(VARIANTS))
  if unknown:
    parser.error(f"--only: expected variants from {sorted(VARIANTS)}, found {unknown}")
  start = time.perf_counter()
  train = [s for s in synthetic.generate_scenes(30_000, 2, "train") if s["relation"]]
  held_out = [s for s in synthetic.generate_scenes(1000, 3, "eval", unique=True) if s["relation"]]
  print(f"{len(train)} training scenes, {len(held_out)} held-out scenes with a relation "
        f"({time.perf_counter() - start:.0f} s)")
  print("| variant | seed | step | loss | i2t R@1 | relation twins | text: paraphrase > twin | s |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- |")
  for variant, seed in itertools.product(variants, [int(s) for s in args.seeds.split(",")]):
    run(variant, seed, args.steps, train, held_out, args.log_every)


if __name__ == "__main__":
  main()
