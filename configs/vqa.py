"""Visual question answering: answer classifier, soft-target BCE, official VQA accuracy.

  python -m unimo_jax.main --config=configs/vqa.py:tiny --workdir=/tmp/vqa \\
      --config.init_from=/tmp/unimo_tiny
Data: pair shards with the question in caption_ids and 10 annotator answers in 'answers'.
TPU (XLA cost-model estimates, docs/tpu_sizing.md): base on v5e-8, 0.82 GiB per chip,
~15 ms per step, MFU 10.0 %.
"""

from unimo_jax.tasks.finetune_config import finetune_config


def get_config(arg: str = "tiny"):
  c = finetune_config("vqa", arg)
  c.task.answer_min_count = 9  # VQA v2 practice: answers given at least 9 times
  c.task.head_dropout = 0.1
  # --mode=compile reads no data: it sizes the head for this many answers (VQA v2's 3,129-answer
  # vocabulary of UNITER and VILLA); training builds the vocabulary from the data.
  c.task.compile_answers = 3129
  if c.preset == "tiny":
    c.task.head_dropout = 0.0
    c.task.answer_min_count = 3
    c.steps = 800
    c.data.eval_limit = 1000
  else:
    c.model.dropout_rate = 0.1
    c.optimizer.learning_rate = 5e-5
  if c.preset == "base":
    c.model.remat = "none"  # 4 examples per v5e-8 chip: their activations fit (docstring)
  return c
