"""Gigaword headline generation, UNIMO's recipe: script/seq2seq/gigaword[_large]/model_conf.

  python -m unimo_jax.main --config=configs/gigaword.py:base --workdir=DIR \\
      --config.init_from=CKPT --config.data.train_dir=gigaword/train.tsv \\
      --config.data.eval_dir=gigaword/dev.tsv --config.data.tokenizer=unimo_dict
TSV columns: src, tgt.
Every hyper-parameter is the original script's (unimo_jax/tasks/recipes.py, with the source of
each value); `config.recipe` names the script and the released checkpoint it starts from.
"""

import pathlib

from unimo_jax.tasks.recipes import recipe_config


def get_config(arg: str = "base"):
  return recipe_config("gigaword", arg, pathlib.Path(__file__).parent)
