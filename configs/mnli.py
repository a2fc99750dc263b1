"""MNLI entailment (GLUE), UNIMO's recipe: script/classification/MNLI-AX[_large]/model_conf.

  python -m unimo_jax.main --config=configs/mnli.py:base --workdir=DIR \\
      --config.init_from=CKPT --config.data.train_dir=MNLI/train.tsv \\
      --config.data.eval_dir=MNLI/dev_matched.tsv --config.data.tokenizer=unimo_dict
TSV columns: text_a, text_b, label; metric: accuracy.
Every hyper-parameter is the original script's (unimo_jax/tasks/recipes.py, with the source of
each value); `config.recipe` names the script and the released checkpoint it starts from.
"""

import pathlib

from unimo_jax.tasks.recipes import recipe_config


def get_config(arg: str = "base"):
  return recipe_config("mnli", arg, pathlib.Path(__file__).parent)
