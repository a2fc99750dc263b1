"""A thin parent for each process of a multi-process run, for the one loss it cannot see itself.

When process 0, which hosts JAX's coordination service, is lost, XLA's coordination agent in every
other process ends that process by an abort: a fatal log line, a C++ stack dump and Python's
fault handler output, exit 134. Nothing in the process can intercept it. So with
distributed.peer_timeout_s > 0 the command line runs itself again as a child and this parent:
  - passes stdout through untouched and stderr line by line, until the agent's fatal line, after
    which the dump is dropped;
  - forwards SIGTERM / SIGINT to the child (preemption reaches the run as before);
  - on that abort, prints one line naming the lost coordinator and the last checkpoint on disk
    and exits EXIT_LOST_PEER, like the other lost-process cases (train/peers.py);
  - otherwise exits with the child's code. The child dies with its parent (PR_SET_PDEATHSIG).
"""

import ctypes
import os
import signal
import subprocess
import sys

from unimo_jax.train.peers import EXIT_LOST_PEER, newest_checkpoint_on_disk

CHILD_ENV = "UNIMO_JAX_SUPERVISED"
AGENT_FATAL = b"Terminating process because the JAX distributed service detected fatal errors"


def is_child() -> bool:
  return os.environ.get(CHILD_ENV) == "1"


def _die_with_parent():
  """In the child, before exec: SIGKILL when the parent dies (Linux), so no run outlives it."""
  try:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
  except OSError:
    pass


def run_as_child(argv, process_id: int, checkpoints_dir) -> int:
  """Runs `argv` (this command line) as a supervised child; returns the exit code to use."""
  env = dict(os.environ, **{CHILD_ENV: "1"})
  child = subprocess.Popen([sys.executable, *argv], env=env, stderr=subprocess.PIPE,
                           preexec_fn=_die_with_parent if sys.platform == "linux" else None)
  for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, lambda s, _: child.send_signal(s))
  coordinator_lost = False
  for line in iter(child.stderr.readline, b""):
    if AGENT_FATAL in line:
      coordinator_lost = True
    if not coordinator_lost:
      sys.stderr.buffer.write(line)
      sys.stderr.flush()
  code = child.wait()
  if coordinator_lost:
    print(f"error: process {process_id}: lost the coordination service on process 0 (JAX's "
          f"coordination agent ended this process); last checkpoint: "
          f"{newest_checkpoint_on_disk(checkpoints_dir)}; exiting with code {EXIT_LOST_PEER}",
          file=sys.stderr, flush=True)
    return EXIT_LOST_PEER
  return code if code >= 0 else 128 - code
