"""Visual entailment (SNLI-VE): UNIMO's head, pooled_text + pooled_image -> Dense(2048) -> 3.

  python -m unimo_jax.main --config=configs/snli_ve.py:tiny --workdir=/tmp/snli_ve \\
      --config.init_from=/tmp/unimo_tiny
Data: pair shards with the statement in caption_ids and 'label' 0/1/2 (see task.label_names;
`python -m unimo_jax.data snli-ve` writes them from UNIMO's release).
The base / large presets are UNIMO's SNLI-VE recipe (tasks/recipes.py: batch 192, VILLA).
TPU (XLA cost-model estimates, docs/tpu_sizing.md): base on v5e-8, 10.69 GiB per chip,
~254 ms per step, MFU 50.4 % (optimistic for VILLA steps).
"""

from unimo_jax.tasks.finetune_config import finetune_config
from unimo_jax.tasks.recipes import apply_recipe


def get_config(arg: str = "tiny"):
  c = finetune_config("snli_ve", arg)
  c.task.label_names = ("entailment", "neutral", "contradiction")
  c.task.head_hidden = 2048
  c.task.head_dropout = 0.1
  c.task.head_activation = "none"  # UNIMO's; 'gelu' or 'relu' put a nonlinearity after Dense(2048)
  c.task.head_combine = "sum"  # UNIMO's pool_t + pool_i; 'product' = pool_t * pool_i
  if c.preset == "tiny":
    c.task.head_hidden = 128
    c.task.head_dropout = 0.0
    c.steps = 600
  if c.preset != "tiny":  # UNIMO's recipe (tasks/recipes.py: "snli_ve")
    apply_recipe(c, "snli_ve")
  return c
