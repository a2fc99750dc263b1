"""STS-B similarity (GLUE regression), UNIMO's recipe: script/regression/STS-B[_large]/model_conf,
starting from the MNLI fine-tuned checkpoint (unimo_mnli_{base,large}_en).

  python -m unimo_jax.main --config=configs/stsb.py:base --workdir=DIR \\
      --config.init_from=CKPT --config.data.train_dir=STS-B/train.tsv \\
      --config.data.eval_dir=STS-B/dev.tsv --config.data.tokenizer=unimo_dict
TSV columns: text_a, text_b, label (a score); metrics: Pearson / Spearman.
Every hyper-parameter is the original script's (unimo_jax/tasks/recipes.py, with the source of
each value); `config.recipe` names the script and the released checkpoint it starts from.
"""

import pathlib

from unimo_jax.tasks.recipes import recipe_config


def get_config(arg: str = "base"):
  return recipe_config("stsb", arg, pathlib.Path(__file__).parent)
