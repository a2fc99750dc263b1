"""CoQA conversational question answering, UNIMO's recipe: script/seq2seq/coqa[_large]/model_conf
(task_type dialog: role and turn embeddings).

  python -m unimo_jax.main --config=configs/coqa.py:base --workdir=DIR \\
      --config.init_from=CKPT --config.data.train_dir=coqa/train.tsv \\
      --config.data.eval_dir=coqa/dev.tsv --config.data.tokenizer=unimo_dict
TSV columns: src (the conversation, turns joined by " [SEP] "), knowledge (the story), tgt.
Every hyper-parameter is the original script's (unimo_jax/tasks/recipes.py, with the source of
each value); `config.recipe` names the script and the released checkpoint it starts from.
"""

import pathlib

from unimo_jax.tasks.recipes import recipe_config


def get_config(arg: str = "base"):
  return recipe_config("coqa", arg, pathlib.Path(__file__).parent)
