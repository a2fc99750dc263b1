"""Preemption notices: when a run is asked to stop, every process saves at the same step.

TPU VMs announce maintenance and spot preemption with SIGTERM. In a multi-process run JAX's
coordination service catches it on whichever host receives it and agrees on one step for all
(jax.experimental.multihost_utils.reached_preemption_sync_point, the mechanism orbax's
CheckpointManager.reached_preemption and MaxText use). A single process has no coordination
service, so a SIGTERM handler here records the notice instead. Either way the driver asks
`reached(step)` after every step, saves a checkpoint there and exits 0.
"""

import signal

import jax


class PreemptionNotice:
  """Use as a context manager around the training loop; `reached(step)` is True at the step
  where this run should checkpoint and stop (the same step on every process)."""

  def __init__(self):
    self.signal_name = None  # single process: the signal that was received
    self._previous = None

  def __enter__(self):
    if jax.process_count() == 1:
      self._previous = signal.signal(signal.SIGTERM, self._on_signal)
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
    return False

  def _on_signal(self, signum, frame):
    del frame
    self.signal_name = signal.Signals(signum).name

  def reached(self, step: int) -> bool:
    """Must be called at every step on every process (the multi-process protocol counts on
    it)."""
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      return multihost_utils.reached_preemption_sync_point(int(step))
    return self.signal_name is not None
