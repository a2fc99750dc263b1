"""CoLA acceptability (GLUE), UNIMO's recipe: script/classification/CoLA[_large]/model_conf.

  python -m unimo_jax.main --config=configs/cola.py:base --workdir=DIR \\
      --config.init_from=CKPT --config.data.train_dir=CoLA/train.tsv \\
      --config.data.eval_dir=CoLA/dev.tsv --config.data.tokenizer=unimo_dict
TSV columns: text_a, label (0/1); metric: Matthews correlation.
Every hyper-parameter is the original script's (unimo_jax/tasks/recipes.py, with the source of
each value); `config.recipe` names the script and the released checkpoint it starts from.
"""

import pathlib

from unimo_jax.tasks.recipes import recipe_config


def get_config(arg: str = "base"):
  return recipe_config("cola", arg, pathlib.Path(__file__).parent)
