"""CNN/DailyMail summarisation, UNIMO's recipe: script/seq2seq/cnndm[_large]/model_conf.

  python -m unimo_jax.main --config=configs/cnndm.py:base --workdir=DIR \\
      --config.init_from=CKPT --config.data.train_dir=cnndm/train.tsv \\
      --config.data.eval_dir=cnndm/dev.tsv --config.data.tokenizer=unimo_dict
TSV columns: src, tgt; beam search with word-level trigram blocking.
Every hyper-parameter is the original script's (unimo_jax/tasks/recipes.py, with the source of
each value); `config.recipe` names the script and the released checkpoint it starts from.
TPU (XLA cost-model estimates, docs/tpu_sizing.md): base on v5e-8, 0.74 GiB per chip,
~37 ms per step, MFU 22.0 %.
"""

import pathlib

from unimo_jax.tasks.recipes import recipe_config


def get_config(arg: str = "base"):
  return recipe_config("cnndm", arg, pathlib.Path(__file__).parent)
