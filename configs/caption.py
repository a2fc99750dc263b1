"""Image captioning (COCO-style; UNIMO: beam 5, length penalty 0.6, label smoothing 0.1).

  python -m unimo_jax.main --config=configs/caption.py:tiny --workdir=/tmp/caption \\
      --config.init_from=/tmp/unimo_tiny          # the pretraining workdir (synthetic scenes)
  python -m unimo_jax.main --config=configs/caption.py:base --workdir=DIR --config.init_from=CKPT \\
      --config.data.train_dir=coco/train --config.data.eval_dir=coco/test \\
      --config.data.tokenizer=unimo_dict
Modes: --mode=train (default), eval, predict.
The base / large presets are UNIMO's COCO recipe (tasks/recipes.py: batch 64, object tags, VILLA).
TPU (XLA cost-model estimates, docs/tpu_sizing.md): base on v5e-8, 7.99 GiB per chip,
~167 ms per step, MFU 50.4 % (optimistic for VILLA steps).
"""

from unimo_jax.tasks.finetune_config import finetune_config
from unimo_jax.tasks.recipes import apply_recipe


def get_config(arg: str = "tiny"):
  c = finetune_config("caption", arg)
  c.task.label_smoothing = 0.1
  c.task.object_tags = False  # True: detector object tags (records' tag_ids) join the source
  c.data.max_tags = 8 if c.preset == "tiny" else 100
  c.decode.beam_size = 5
  c.decode.alpha = 0.6
  c.decode.max_length = 20 if c.preset == "tiny" else 50
  c.decode.min_length = 0 if c.preset == "tiny" else 5
  if c.preset == "tiny":
    c.steps = 600
    c.data.eval_limit = 300
  if c.preset != "tiny":  # UNIMO's recipe (tasks/recipes.py: "coco_caption")
    apply_recipe(c, "coco_caption")
  return c
