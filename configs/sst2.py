"""SST-2 sentiment (GLUE), UNIMO's recipe: script/classification/SST-2[_large]/model_conf.

  python -m unimo_jax.main --config=configs/sst2.py:base --workdir=DIR \\
      --config.init_from=CKPT --config.data.train_dir=SST-2/train.tsv \\
      --config.data.eval_dir=SST-2/dev.tsv --config.data.tokenizer=unimo_dict
TSV columns: text_a, label (0/1); metric: accuracy.
Every hyper-parameter is the original script's (unimo_jax/tasks/recipes.py, with the source of
each value); `config.recipe` names the script and the released checkpoint it starts from.
"""

import pathlib

from unimo_jax.tasks.recipes import recipe_config


def get_config(arg: str = "base"):
  return recipe_config("sst2", arg, pathlib.Path(__file__).parent)
