"""SQuAD question generation, UNIMO's recipe: script/seq2seq/squad_qg[_large]/model_conf.

  python -m unimo_jax.main --config=configs/squad_qg.py:base --workdir=DIR \\
      --config.init_from=CKPT --config.data.train_dir=squad_qg/train.tsv \\
      --config.data.eval_dir=squad_qg/dev.tsv --config.data.tokenizer=unimo_dict
TSV columns: the source columns (e.g. the passage and the answer; every column but tgt
and knowledge, in order), tgt.
Every hyper-parameter is the original script's (unimo_jax/tasks/recipes.py, with the source of
each value); `config.recipe` names the script and the released checkpoint it starts from.
"""

import pathlib

from unimo_jax.tasks.recipes import recipe_config


def get_config(arg: str = "base"):
  return recipe_config("squad_qg", arg, pathlib.Path(__file__).parent)
