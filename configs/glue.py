"""GLUE-style text classification / regression (SST-2, MNLI, CoLA, STS-B).

  python -m unimo_jax.main --config=configs/glue.py:tiny --workdir=/tmp/glue \\
      --config.init_from=/tmp/unimo_tiny                      # synthetic sentence-pair task
  python -m unimo_jax.main --config=configs/glue.py:base --workdir=DIR --config.init_from=CKPT \\
      --config.data.train_dir=SST-2/train.tsv --config.data.eval_dir=SST-2/dev.tsv \\
      --config.data.tokenizer=unimo_dict --config.task.labels="(0, 1)"
Regression (STS-B): --config.task.labels="()". MNLI: labels contradiction,entailment,neutral.
TSV columns: text_a, [text_b], label.
TPU (XLA cost-model estimates, docs/tpu_sizing.md): base on v5e-8, 0.46 GiB per chip,
~24 ms per step, MFU 24.2 %.
"""

from unimo_jax.tasks.finetune_config import finetune_config


def get_config(arg: str = "tiny"):
  c = finetune_config("glue", arg)
  c.task.labels = ("0", "1")  # () = regression
  c.task.head_dropout = 0.1
  c.task.synthetic = "classify"  # tiny, no train_dir: 'classify' or 'similarity' (regression)
  if c.preset == "tiny":
    c.task.head_dropout = 0.0
    c.steps = 500
  else:
    c.model.dropout_rate = 0.1
    c.optimizer.learning_rate = 2e-5
    c.optimizer.weight_decay = 0.0
    c.data.max_text_length = 512
  return c
