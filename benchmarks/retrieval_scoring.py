"""Retrieval scoring throughput: the fine-tuned joint encoder + match head (every image-text
pair through the transformer, as UNIMO's Flickr30k evaluation) versus zero-shot CMCL scoring
(images and texts encoded once, scored by a dot product), same run.

  python benchmarks/retrieval_scoring.py                  # base preset, 100 regions, 40 tokens
  python benchmarks/retrieval_scoring.py --preset tiny --images 64 --texts 64

Workload: --images random images of [IMG] + --regions regions and --texts random captions of
--tokens tokens, random weights of the preset (fp32). The joint scorer runs batches of --batch
pairs; zero-shot encodes every image and text once and multiplies the embeddings.
Reports pairs/s for both (median of --repeats after a warm-up) and their ratio.
"""

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from timing import median_seconds
from unimo_jax.model import Unimo
from unimo_jax.model.params import init_params
from unimo_jax.model.presets import model_config
from unimo_jax.data.synthetic.random_batch import random_regions, random_text
from unimo_jax.tasks.heads import MatchHead


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default="base")
  parser.add_argument("--images", type=int, default=8)
  parser.add_argument("--texts", type=int, default=16)
  parser.add_argument("--regions", type=int, default=100)
  parser.add_argument("--tokens", type=int, default=40)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=2)
  args = parser.parse_args()

  config = model_config(args.preset)
  model, head = Unimo(config), MatchHead(config)
  params = init_params(config, jax.random.key(0))
  h = config.hidden_size
  head_params = nn.unbox(head.init(jax.random.key(1), {"pooled_text": jnp.zeros((1, h)),
                                                       "pooled_image": jnp.zeros((1, h))}))["params"]
  rng = np.random.default_rng(0)
  images = random_regions(config, rng, batch=args.images, regions=args.regions)
  texts = random_text(config, rng, batch=args.texts, length=args.tokens)
  pairs = args.images * args.texts
  if pairs % args.batch:
    raise SystemExit(f"--images x --texts ({pairs}) must be a multiple of --batch ({args.batch})")

  joint = jax.jit(lambda p, hp, b: head.apply({"params": hp}, model.apply({"params": p}, b,
                                                                          heads=frozenset())))
  image_rows = jax.tree.map(lambda x: np.repeat(x, args.texts, axis=0), images)
  text_rows = np.tile(texts, (args.images, 1))

  def score_joint():
    out = []
    for start in range(0, pairs, args.batch):
      batch = jax.tree.map(lambda x: x[start:start + args.batch], image_rows)
      batch["input_ids"] = text_rows[start:start + args.batch]
      out.append(joint(params, head_params, batch))
    return np.concatenate(jax.device_get(out))

  embed = jax.jit(lambda p, b, key: model.apply({"params": p}, b, heads={"contrastive"})[key],
                  static_argnums=2)

  def score_zero_shot():
    image_emb = embed(params, images, "image_embedding")
    text_emb = embed(params, {"input_ids": texts}, "text_embedding")
    return np.asarray(image_emb @ text_emb.T)

  print(f"{args.preset} preset, {jax.devices()[0].platform} x{jax.device_count()}: "
        f"{args.images} images x {args.texts} texts = {pairs} pairs, "
        f"{args.regions + 1} image slots + {args.tokens} tokens", flush=True)
  joint_s = median_seconds(score_joint, args.repeats)
  zero_s = median_seconds(score_zero_shot, args.repeats)
  print(f"  joint encoder + match head  {pairs / joint_s:10.1f} pairs/s ({joint_s:.2f} s)")
  print(f"  zero-shot CMCL embeddings   {pairs / zero_s:10.1f} pairs/s ({zero_s:.2f} s)")
  print(f"  zero-shot / joint: {joint_s / zero_s:.1f}x")


if __name__ == "__main__":
  main()
