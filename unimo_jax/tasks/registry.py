"""Task name -> task class (config.task.name)."""

from unimo_jax.tasks.caption import CaptionTask
from unimo_jax.tasks.glue import GlueTask
from unimo_jax.tasks.retrieval import RetrievalTask
from unimo_jax.tasks.seq2seq import Seq2seqTask
from unimo_jax.tasks.snli_ve import EntailmentTask
from unimo_jax.tasks.vqa import VqaTask

TASKS = {t.name: t for t in (CaptionTask, RetrievalTask, VqaTask, EntailmentTask, GlueTask,
                             Seq2seqTask)}


def make_task(config, tokenizer, workdir, mesh=None):
  name = config.task.name
  if name not in TASKS:
    raise ValueError(f"task.name: expected one of {sorted(TASKS)}, found {name!r}")
  return TASKS[name](config, tokenizer, workdir, mesh)
