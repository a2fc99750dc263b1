"""Multi-process runs: joining them (jax.distributed) and noticing when one of them is lost.

By default a JAX process whose peer dies ends by an abort (exit 134) with pages of
coordination-service errors, or hangs in a collective until the service's heartbeat timeout.
Here, with config.distributed.peer_timeout_s > 0, the service runs with recoverability on
(jax_enable_recoverability: a lost process is dropped from the live set instead of failing
everyone) and heartbeat_timeout_seconds = peer_timeout_s; a PeerWatch thread asks the service for
the live processes every second and, when one is missing, prints one line naming it and the last
checkpoint on disk and exits with EXIT_LOST_PEER, without a stack dump. The loss of process 0 is
the exception: it hosts the coordination service, and XLA's coordination agent in every other
process ends that process itself (an abort) before Python can act; the command line's parent
process reports that one (train/supervise.py). A run that ends normally leaves through
leave_together (process 0 last).
"""

import contextlib
import os
import sys
import threading
import time

import jax

from unimo_jax.train.workdir import error_summary

EXIT_LOST_PEER = 3


def is_multi_process_launch(config) -> bool:
  """Whether this process is one of several: config.distributed names a coordinator, or the
  environment does (JAX_COORDINATOR_ADDRESS, or a TPU pod's several worker hostnames)."""
  return bool(config.distributed.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
              or "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""))


def initialize_distributed(config) -> None:
  """jax.distributed.initialize for multi-process runs (explicit config.distributed fields, or
  auto-detection on TPU pods / when JAX_COORDINATOR_ADDRESS is set). A no-op for one process."""
  from unimo_jax.errors import ConfigError
  d = config.distributed
  timeout = int(d.get("peer_timeout_s", 0))
  kwargs = {}
  if timeout > 0:
    jax.config.update("jax_enable_recoverability", True)
    kwargs["heartbeat_timeout_seconds"] = timeout
  if d.coordinator_address:
    if d.num_processes <= 0 or d.process_id < 0:
      raise ConfigError("distributed: coordinator_address needs num_processes > 0 and "
                        f"process_id >= 0, found {d.num_processes} and {d.process_id}")
    jax.distributed.initialize(d.coordinator_address, int(d.num_processes), int(d.process_id),
                               **kwargs)
  elif is_multi_process_launch(config):
    jax.distributed.initialize(**kwargs)


def leave_together(timeout_s: float = 60.0) -> None:
  """Ends a multi-process run cleanly. With recoverability on the coordination service keeps no
  shutdown barrier of its own, and a process still connected when process 0 (which hosts it)
  exits ends by an abort; so every process meets at a barrier, the others disconnect first and
  process 0 leaves once they are gone (or after `timeout_s`). A no-op for one process or with
  recoverability off (JAX's own shutdown then synchronises)."""
  from jax._src import distributed
  client = distributed.global_state.client
  if jax.process_count() == 1 or client is None or not jax.config.jax_enable_recoverability:
    return
  from jax.experimental import multihost_utils
  multihost_utils.sync_global_devices("unimo_jax: end of the run")
  if jax.process_index() == 0:
    processes = list(range(jax.process_count()))
    deadline = time.monotonic() + timeout_s
    while len(client.get_live_nodes(processes)) > 1 and time.monotonic() < deadline:
      time.sleep(0.1)
  jax.distributed.shutdown()


def newest_checkpoint_on_disk(directory) -> str:
  """'step N in DIR' for the newest finished step directory (orbax names unfinished ones with a
  suffix), or 'none in DIR'."""
  try:
    steps = [int(p.name) for p in directory.iterdir() if p.name.isdigit()]
  except OSError:
    steps = []
  return f"step {max(steps)} in {directory}" if steps else f"none in {directory}"


class PeerWatch:
  """A daemon thread that ends this process with one line when another process is lost."""

  def __init__(self, timeout_s: float, checkpoints_dir, poll_s: float = 1.0):
    from jax._src import distributed  # the client JAX's own multihost_utils use
    self.client = distributed.global_state.client
    self.timeout_s, self.poll_s = float(timeout_s), float(poll_s)
    self.checkpoints_dir = checkpoints_dir
    self.processes = list(range(jax.process_count()))
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._watch, name="unimo-peer-watch", daemon=True)

  def start(self):
    self._thread.start()
    return self

  def stop(self):
    self._stop.set()
    self._thread.join(timeout=self.poll_s * 5)

  def _watch(self):
    while not self._stop.wait(self.poll_s):
      try:
        live = self.client.get_live_nodes(self.processes)
      except Exception as e:  # the service (process 0) is gone or unreachable
        if not self._stop.is_set():
          self.lost(f"lost the coordination service on process 0 ({error_summary(e)})")
        return
      missing = sorted(set(self.processes) - set(live))
      if missing and not self._stop.is_set():
        names = ", ".join(str(p) for p in missing)
        self.lost(f"lost process {names} of {len(self.processes)} (no heartbeat for "
                  f"{self.timeout_s:.0f} s)")

  def lost(self, reason: str):
    """Prints the one line and ends the process at once (no Python or XLA shutdown: those
    would wait on the lost peer)."""
    print(f"error: process {jax.process_index()}: {reason}; last checkpoint: "
          f"{newest_checkpoint_on_disk(self.checkpoints_dir)}; exiting with code "
          f"{EXIT_LOST_PEER}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(EXIT_LOST_PEER)

  def explain(self, error: BaseException):
    """After `error` in this process (e.g. a collective that failed because a peer closed its
    connection): waits for the watch to name a lost peer (it then exits); returns when none is
    lost within the timeout, so that the error is raised as it is."""
    deadline = time.monotonic() + self.timeout_s + 5 * self.poll_s
    print(f"process {jax.process_index()}: {error_summary(error)}; checking the other "
          f"processes (up to {self.timeout_s:.0f} s)", file=sys.stderr, flush=True)
    while time.monotonic() < deadline and self._thread.is_alive():
      time.sleep(self.poll_s)


@contextlib.contextmanager
def watching_peers(config, checkpoints_dir, passthrough=()):
  """Around a mode's work in a multi-process run with distributed.peer_timeout_s > 0: a lost
  process ends this one with one line (PeerWatch). An error other than the `passthrough` kinds
  (the run's own errors) first waits for the watch to name a lost peer. A no-op otherwise."""
  timeout = float(config.distributed.get("peer_timeout_s", 0))
  if jax.process_count() == 1 or timeout <= 0:
    yield
    return
  watch = PeerWatch(timeout, checkpoints_dir).start()
  try:
    yield
  except Exception as e:
    if not isinstance(e, passthrough):
      watch.explain(e)
    raise
  finally:
    watch.stop()

