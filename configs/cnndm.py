"""CNN/DailyMail summarisation, UNIMO's recipe: script/seq2seq/cnndm[_large]/model_conf.

  python -m unimo_jax.main --config=configs/cnndm.py:base --workdir=DIR \\
      --config.init_from=CKPT --config.data.train_dir=cnndm/train.tsv \\
      --config.data.eval_dir=cnndm/dev.tsv --config.data.tokenizer=unimo_dict
TSV columns: src, tgt; beam search with word-level trigram blocking.
Every hyper-parameter is the original script's (unimo_jax/tasks/recipes.py, with the source of
each value); `config.recipe` names the script and the released checkpoint it starts from.
Sized for TPU: the base preset fine-tunes on v5e-8 (`--mode=compile --topology=v5e-8`:
0.74 GiB per chip of 15.75, 95 % free, the decode loop over 40 articles x 5 beams with trigram
blocking 4.08 GiB; estimated 37 ms per step and MFU 22.0 %, figures of XLA's TPU cost model, not
measurements).
"""

import pathlib

from unimo_jax.tasks.recipes import recipe_config


def get_config(arg: str = "base"):
  return recipe_config("cnndm", arg, pathlib.Path(__file__).parent)
