"""Image-text retrieval (Flickr30k-style): UNIMO's match head with circle loss, in-batch negatives.

  python -m unimo_jax.main --config=configs/retrieval.py:tiny --workdir=/tmp/retrieval \\
      --config.init_from=/tmp/unimo_tiny
  python -m unimo_jax.main --config=configs/retrieval.py:tiny --workdir=/tmp/zero_shot \\
      --config.init_from=/tmp/unimo_tiny --mode=eval          # zero-shot and untrained-head figures
Modes: --mode=train (default), eval, predict.
The base / large presets are UNIMO's Flickr30k recipe (tasks/recipes.py: batch 32, 10 + 10
negatives from the training set, lr 5e-6 x0.1 at epochs 24 and 32).
TPU (XLA cost-model estimates, docs/tpu_sizing.md): base on v5e-8, 11.32 GiB per chip,
~152 ms per step, MFU 22.0 %.
"""

from unimo_jax.tasks.finetune_config import finetune_config
from unimo_jax.tasks.recipes import apply_recipe


def get_config(arg: str = "tiny"):
  c = finetune_config("retrieval", arg)
  c.task.negatives = 10  # UNIMO: 10 image negatives and 10 caption negatives per positive
  # where they come from: 'train_set' (UNIMO's reader: random other images of the training set
  # and their captions) or 'batch' (the next examples of the batch: no extra encoding per row)
  c.task.negative_source = "train_set"
  c.task.circle_margin = 0.2
  c.task.circle_scale = 1.0
  c.task.head_dropout = 0.1
  c.task.rerank_top_k = 0  # 0: score every pair (UNIMO); k >= 10: re-score the zero-shot top-k
  c.eval_batch = 256
  if c.preset == "tiny":
    c.task.negative_source = "batch"  # the synthetic demo's measured figures use the batch's
    c.task.negatives = 7
    c.task.circle_scale = 16.0  # raw match scores; a larger scale trains faster on the tiny model
    c.task.head_dropout = 0.0
    c.batch_size = 32
    c.steps = 600
    c.data.eval_limit = 200
  if c.preset != "tiny":  # UNIMO's recipe (tasks/recipes.py: "flickr30k")
    apply_recipe(c, "flickr30k")
  if c.preset == "base":
    # 704 pair rows per step (each of the 32 texts with its image and 10 others, each image
    # with its text and 10 others: 88 per v5e-8 chip): a chip holds their 12 layers'
    # activations, so none are recomputed (docs/tpu_sizing.md)
    c.model.remat = "none"
  return c
