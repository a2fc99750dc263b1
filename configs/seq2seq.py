"""Text generation (CNN/DM, Gigaword, SQuAD question generation, CoQA): seq2seq with beam search.

  python -m unimo_jax.main --config=configs/seq2seq.py:tiny --workdir=/tmp/seq2seq \\
      --config.init_from=/tmp/unimo_tiny                      # synthetic rewrite task
  python -m unimo_jax.main --config=configs/seq2seq.py:base --workdir=DIR --config.init_from=CKPT \\
      --config.data.train_dir=cnndm/train.tsv --config.data.eval_dir=cnndm/dev.tsv \\
      --config.data.tokenizer=unimo_dict --config.data.max_source_length=512 \\
      --config.data.max_target_length=128 --config.decode.max_length=128 \\
      --config.decode.min_length=20 --config.decode.trigram_blocking=True
TSV columns: one or more sources (every column but tgt and knowledge, in order), tgt;
CoQA: --config.task.dialog=True --config.model.role_type_size=3 --config.model.turn_type_size=16.
TPU (XLA cost-model estimates, docs/tpu_sizing.md): base on v5e-8, 0.45 GiB per chip,
~17 ms per step, MFU 11.7 %.
"""

from unimo_jax.tasks.finetune_config import finetune_config


def get_config(arg: str = "tiny"):
  c = finetune_config("seq2seq", arg)
  c.task.label_smoothing = 0.1
  c.task.synthetic = "rewrite"
  c.task.dialog = False  # True: CoQA's dialog layout (needs model.role_type_size / turn_type_size)
  c.decode.beam_size = 5
  c.decode.alpha = 0.6
  c.decode.trigram_blocking = False
  if c.preset == "tiny":
    c.steps = 600
    c.data.eval_limit = 300
  else:
    c.model.dropout_rate = 0.1
    c.optimizer.learning_rate = 4e-5
  return c
