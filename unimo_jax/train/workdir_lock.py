"""One run per workdir: process 0 of a run that writes into a workdir holds <workdir>/run.lock.

The lock is a small JSON file naming its holder (host, pid, the process's start time, when the
run started) and a heartbeat that a thread rewrites every HEARTBEAT_SECONDS. A second start on
the same workdir fails at once naming the holder. A lock is stale, and is taken over with a
line saying so, when its holder is gone:
  * same host: the pid is not running, or runs another process (its start time differs);
  * another host: the heartbeat is older than STALE_SECONDS (the host cannot be asked).
On a local disk the lock file is created atomically (O_EXCL) and a stale one is renamed away
before the new one is created, so of two racing starts exactly one gets the workdir. On gs://
the check and the write are two requests: two starts within the same second can both pass, so
give concurrent runs distinct workdirs there (the launch scripts' default: one per run name).
"""

import contextlib
import json
import os
import socket
import threading
import time

from unimo_jax.errors import WorkdirInUse
from unimo_jax.paths import as_path, is_remote

LOCK_FILE = "run.lock"
HEARTBEAT_SECONDS = 60.0
STALE_SECONDS = 300.0


def process_start_ticks(pid: int):
  """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22), or None
  where /proc does not tell; it tells a recycled pid from the process that held the lock."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return int(f.read().rsplit(")", 1)[1].split()[19])
  except (OSError, IndexError, ValueError):
    return None


def holder_is_alive(holder: dict, now: float) -> bool:
  """Whether the run that wrote `holder` may still be running."""
  if holder.get("host") != socket.gethostname():
    return now - float(holder.get("heartbeat", 0)) < STALE_SECONDS
  pid = int(holder.get("pid", -1))
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # running, as another user
    return True
  ticks = holder.get("start_ticks")
  return ticks is None or process_start_ticks(pid) in (None, ticks)


def describe(holder: dict) -> str:
  started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder.get("started", 0))))
  return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} (started {started})"


class WorkdirLock:
  """acquire() before a run writes anything into `workdir`; release() when it ends."""

  def __init__(self, workdir):
    self.path = as_path(workdir) / LOCK_FILE
    self.record = None
    self._stop = threading.Event()
    self._thread = None

  def acquire(self) -> None:
    """Takes the lock, or raises WorkdirInUse naming the run that holds it."""
    self.path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    self.record = {"host": socket.gethostname(), "pid": os.getpid(),
                   "start_ticks": process_start_ticks(os.getpid()), "started": now,
                   "heartbeat": now}
    for _ in range(3):  # a racing start may take over the same stale lock in between
      if self._create():
        self._thread = threading.Thread(target=self._beat, daemon=True, name="workdir-lock")
        self._thread.start()
        return
      holder = self._read_holder()
      if holder is None:
        continue  # released between our attempt and the read
      if holder_is_alive(holder, time.time()):
        raise WorkdirInUse(
            f"{self.path.parent} is in use by the run of {describe(holder)}; wait for it to "
            f"end or give this run another --workdir (if that run is gone, delete {self.path})")
      print(f"taking over the stale lock of {describe(holder)}: that process is gone",
            flush=True)
      self._remove_stale(holder)
    raise WorkdirInUse(f"could not take {self.path}: other starts keep taking it")

  def release(self) -> None:
    """Stops the heartbeat and removes the lock if it is still ours."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
      self._thread = None
    holder = self._read_holder()
    if self.record is not None and holder is not None and self._ours(holder):
      try:
        self.path.unlink()
      except FileNotFoundError:
        pass
    self.record = None

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()
    return False

  # ---- file operations ---------------------------------------------------------------------------

  def _create(self) -> bool:
    text = json.dumps(self.record)
    if is_remote(self.path):
      if self.path.exists():
        return False
      self.path.write_text(text)
      return True
    try:
      fd = os.open(str(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w") as f:
      f.write(text)
    return True

  def _read_holder(self):
    """The lock's record; {} for a lock that cannot be parsed (a start that died mid-write is
    taken for gone); None when there is no lock."""
    try:
      text = self.path.read_text()
    except FileNotFoundError:
      return None
    try:
      holder = json.loads(text)
    except ValueError:
      return {}
    return holder if isinstance(holder, dict) else {}

  def _remove_stale(self, holder: dict) -> None:
    if is_remote(self.path):
      self.path.unlink(missing_ok=True)
      return
    aside = self.path.with_name(f"{LOCK_FILE}.stale.{os.getpid()}")
    try:
      os.rename(str(self.path), str(aside))  # atomic: one of two racing starts moves it
      os.unlink(str(aside))
    except FileNotFoundError:
      pass

  def _ours(self, holder: dict) -> bool:
    return (holder.get("host"), holder.get("pid"), holder.get("started")) == (
        self.record["host"], self.record["pid"], self.record["started"])

  def _beat(self) -> None:
    while not self._stop.wait(HEARTBEAT_SECONDS):
      holder = self._read_holder()
      if holder is None or not self._ours(holder):
        return  # taken over (the run was presumed gone); the run itself goes on
      self.record["heartbeat"] = time.time()
      try:
        self.path.write_text(json.dumps(self.record))
      except OSError:
        pass  # storage trouble shows at the next checkpoint, with its own message


@contextlib.contextmanager
def holding_workdir(workdir, primary: bool):
  """The workdir's lock, held by the primary process (process 0) for the block."""
  if not primary:
    yield None
    return
  lock = WorkdirLock(workdir)
  lock.acquire()
  try:
    yield lock
  finally:
    lock.release()
