"""Host batches by step, built in this process or by worker processes.

A training input is a data source whose item `step` is that step's host batch, a pure function
of the step (the pretraining streams: streams.PretrainingBatches; a fine-tuning task:
tasks/base.TaskBatches). grain reads it as a MapDataset: in this process with data.num_threads
threads, or, with data.workers > 0, by that many worker processes (grain's mp_prefetch), worker
w building steps w, w + workers, ... and the batches coming back in step order. So the batches
are the same for any worker count, and the iterator's state is just the next step: a run resumed
from a checkpoint, under any worker count, sees the batches it would have seen.

Workers run the record reading, decoding (msgpack, JPEG/PNG), cropping and masking outside the
training process's GIL; each keeps data.prefetch batches ready.
"""

import os
import weakref

import grain

from unimo_jax.errors import DataError


def default_workers(cpu_count: int | None = None) -> int:
  """data.workers=-1: one worker process per two host cores beyond the first two, at most 16.
  A 2-core host builds batches in the training process: there the jitted step already keeps
  both cores busy, and a worker would only move the same work to another process (measured:
  docs/notes/input_pipeline.md)."""
  cores = cpu_count or os.cpu_count() or 1
  return min(16, max(0, (cores - 2) // 2))


def resolved_workers(cfg) -> int:
  workers = int(cfg.get("workers", 0))
  return default_workers() if workers < 0 else workers


class HostBatchIterator:
  """Yields host batch step, step + 1, ... of `source` (item `step` = that step's batch; a
  '_skipped' entry, the bad records replaced in it, is taken out and counted). State: the next
  step."""

  def __init__(self, source, cfg, *, counter=None):
    from unimo_jax.data.pipeline.streams import SkipCounter
    self.source = source
    self.workers = resolved_workers(cfg)
    self.threads = int(cfg.get("num_threads", 0))
    self.prefetch = max(1, int(cfg.get("prefetch", 2)))
    self.counter = counter or SkipCounter()
    self.step = 0
    # The open grain iterator, in a holder that a finalizer can close at exit without keeping
    # this object alive: worker processes and their shared-memory batches must be released
    # before the interpreter tears down the modules their cleanup needs.
    self._holder = [None]
    weakref.finalize(self, _close_held, self._holder)

  @property
  def _it(self):
    return self._holder[0]

  @_it.setter
  def _it(self, value):
    self._holder[0] = value

  def __iter__(self):
    return self

  def _open(self):
    ds = grain.MapDataset.source(self.source)[self.step:].to_iter_dataset(grain.ReadOptions(
        num_threads=self.threads,
        prefetch_buffer_size=max(self.prefetch, self.threads) if self.threads else 0))
    if self.workers:
      from absl import flags
      if not flags.FLAGS.is_parsed():  # grain's worker options are absl flags; use their defaults
        flags.FLAGS.mark_as_parsed()
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.workers,
                                                       per_worker_buffer_size=self.prefetch))
    self._it = iter(ds)

  def __next__(self):
    if self._it is None:
      self._open()
    try:
      batch = next(self._it)
    except RuntimeError as e:
      if "terminated unexpectedly" not in str(e):
        raise
      self.close()
      raise DataError(f"input pipeline: a worker process (data.workers={self.workers}) died "
                      f"before step {self.step}'s batch: {e}") from None
    self.step += 1
    skipped = int(batch.pop("_skipped", 0))
    if skipped:
      self.counter.add(skipped)
    return batch

  def get_state(self) -> dict:
    return {"step": self.step}

  def set_state(self, state: dict) -> None:
    if not isinstance(state, dict) or "step" not in state:
      found = sorted(state) if isinstance(state, dict) else type(state).__name__
      raise ValueError(f"iterator state: expected {{'step': N}}, found {found} (a checkpoint "
                       "of an older input pipeline cannot resume its stream)")
    self.close()
    self.step = int(state["step"])

  def close(self) -> None:
    """Stops the worker processes (also done when this is collected, and at exit)."""
    _close_held(self._holder)


def _close_held(holder) -> None:
  it, holder[0] = holder[0], None
  if it is not None and hasattr(it, "close"):
    it.close()
