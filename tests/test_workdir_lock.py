"""One run per workdir: a second start fails at once naming the holder; stale locks are taken
over; the lock is released by the run that holds it."""

import json
import os
import socket
import subprocess
import time

import pytest

from train_helpers import main_command, pretrain_config, run_main, small_run_overrides
from unimo_jax.errors import WorkdirInUse
from unimo_jax.train import workdir_lock
from unimo_jax.train.workdir_lock import LOCK_FILE, WorkdirLock


def _dead_pid() -> int:
  proc = subprocess.Popen(["true"])
  proc.wait()
  return proc.pid


def _write_lock(workdir, **fields):
  workdir.mkdir(parents=True, exist_ok=True)
  record = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
            "heartbeat": time.time(), "start_ticks": workdir_lock.process_start_ticks(os.getpid())}
  record.update(fields)
  (workdir / LOCK_FILE).write_text(json.dumps(record))
  return record


def test_a_second_start_is_refused_naming_the_holder(tmp_path):
  first = WorkdirLock(tmp_path / "w")
  first.acquire()
  with pytest.raises(WorkdirInUse) as error:
    WorkdirLock(tmp_path / "w").acquire()
  message = str(error.value)
  assert f"pid {os.getpid()} on host {socket.gethostname()}" in message
  assert str(tmp_path / "w" / LOCK_FILE) in message and "\n" not in message
  first.release()
  assert not (tmp_path / "w" / LOCK_FILE).exists()
  with WorkdirLock(tmp_path / "w"):  # free again
    assert (tmp_path / "w" / LOCK_FILE).exists()


@pytest.mark.parametrize("stale", ["dead pid", "recycled pid", "silent other host", "garbage"])
def test_stale_locks_are_taken_over(tmp_path, capsys, stale):
  workdir = tmp_path / "w"
  if stale == "dead pid":
    _write_lock(workdir, pid=_dead_pid())
  elif stale == "recycled pid":  # our pid, but another process's start time
    _write_lock(workdir, start_ticks=(workdir_lock.process_start_ticks(os.getpid()) or 0) + 1)
  elif stale == "silent other host":
    _write_lock(workdir, host="elsewhere", heartbeat=time.time() - workdir_lock.STALE_SECONDS - 1)
  else:
    workdir.mkdir()
    (workdir / LOCK_FILE).write_text("\x00\xff not json")
  lock = WorkdirLock(workdir)
  lock.acquire()
  held = json.loads((workdir / LOCK_FILE).read_text())
  assert (held["pid"], held["host"]) == (os.getpid(), socket.gethostname())
  assert "taking over the stale lock" in capsys.readouterr().out
  lock.release()
  assert not list(workdir.iterdir())  # no lock, no set-aside copy left


def test_a_live_other_host_keeps_its_lock(tmp_path):
  _write_lock(tmp_path, host="elsewhere", pid=1, heartbeat=time.time() - 10)
  with pytest.raises(WorkdirInUse, match="pid 1 on host elsewhere"):
    WorkdirLock(tmp_path).acquire()


def test_release_leaves_a_lock_that_is_not_ours(tmp_path):
  lock = WorkdirLock(tmp_path)
  lock.acquire()
  theirs = _write_lock(tmp_path, pid=12345, host="elsewhere")  # taken over meanwhile
  lock.release()
  assert json.loads((tmp_path / LOCK_FILE).read_text()) == theirs


def test_the_heartbeat_advances_while_held(tmp_path, monkeypatch):
  monkeypatch.setattr(workdir_lock, "HEARTBEAT_SECONDS", 0.05)
  with WorkdirLock(tmp_path):
    first = json.loads((tmp_path / LOCK_FILE).read_text())["heartbeat"]
    deadline = time.time() + 10
    while json.loads((tmp_path / LOCK_FILE).read_text())["heartbeat"] == first:
      assert time.time() < deadline, "the heartbeat never moved"
      time.sleep(0.02)


def test_the_driver_refuses_a_held_workdir_and_writes_nothing(tmp_path, run_scenes):
  from unimo_jax.train import driver
  config = pretrain_config()
  config.steps = 1
  config.data.synthetic_dir = str(run_scenes)
  workdir = tmp_path / "w"
  with WorkdirLock(workdir):
    for mode in (driver.train_and_evaluate, driver.evaluate):
      with pytest.raises(WorkdirInUse, match=f"pid {os.getpid()}"):
        mode(config, workdir)
    assert sorted(p.name for p in workdir.iterdir()) == [LOCK_FILE]


@pytest.mark.slow
def test_the_command_line_says_it_in_one_line(tmp_path, run_scenes):
  workdir = tmp_path / "w"
  with WorkdirLock(workdir):
    result = run_main(main_command(workdir, *small_run_overrides(run_scenes, 2)), check=False)
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert lines[-1].startswith(f"error: {workdir} is in use by the run of pid {os.getpid()}")
  assert "Traceback" not in result.stderr
  assert sorted(p.name for p in workdir.iterdir()) == []  # released; nothing written
