"""What TPU fleets do to runs: preemption (SIGTERM), corrupted checkpoints, a lost process and a
full workdir. The slow tests run the real command line on the tiny preset."""

import json
import os
import random
import re
import signal
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from test_train import _free_port
from train_helpers import ROOT, main_command, run_main, small_run_overrides, training_losses
from unimo_jax.parallel import make_mesh
from unimo_jax.train import digest
from unimo_jax.train.checkpoint import (Checkpointer, read_params, restore_params, save_params)
from unimo_jax.errors import CorruptCheckpoint


# ---- digests -------------------------------------------------------------------------------------

def _word0_by_hand(array) -> int:
  """Word 0 of the digest written out independently: sum of bits * (odd weight of the flat
  index), in Python integers, mod 2**32."""
  bits = np.ascontiguousarray(array).view(np.uint32).ravel().astype(np.uint64)
  index = np.arange(bits.size, dtype=np.uint64)
  weight = ((index * 0x9E3779B1) % (1 << 32)) | 1
  return int(sum(int(b) * int(w) for b, w in zip(bits, weight)) % (1 << 32))


def test_digest_is_the_same_on_any_mesh_and_catches_any_changed_element():
  rng = np.random.default_rng(0)
  host = rng.standard_normal((16, 24)).astype(np.float32)
  expected = digest.tree_digests({"x": host})["['x']"]
  assert int(expected[:8], 16) == _word0_by_hand(host)
  for shape, spec in [({"data": 8}, P("data", None)), ({"data": 2, "fsdp": 4}, P("fsdp", "data")),
                      ({"data": 8}, P())]:
    mesh = make_mesh(shape)
    placed = jax.device_put(host, NamedSharding(mesh, spec))
    assert digest.tree_digests({"x": placed})["['x']"] == expected, (shape, spec)
  # any single change of any element, and a swap of two elements, change the digest
  for i, j in [(0, 0), (7, 13), (15, 23)]:
    changed = host.copy()
    changed[i, j] = np.nextafter(changed[i, j], np.float32(np.inf))  # the smallest change
    assert digest.tree_digests({"x": changed})["['x']"] != expected
  swapped = host.copy()
  swapped[[2, 9]] = swapped[[9, 2]]
  assert digest.tree_digests({"x": swapped})["['x']"] != expected
  # other dtypes and keys digest too, and a different dtype of the same bits differs
  tree = {"b": jnp.ones((3, 5), jnp.bfloat16), "i": jnp.arange(7), "k": jax.random.key(1),
          "s": jnp.float32(2.0)}
  names = digest.tree_digests(tree)
  assert sorted(names) == ["['b']", "['i']", "['k']", "['s']"]
  assert names == digest.tree_digests(jax.device_get(tree))
  assert digest.tree_digests({"i": jnp.arange(7, dtype=jnp.uint32)})["['i']"] == names["['i']"]
  assert digest.mismatches({"arrays": names}, tree) == []
  tree["i"] = tree["i"].at[3].add(1)
  assert digest.mismatches({"arrays": names}, tree) == ["['i']"]


def _flip_bytes(directory, count=64):
  """Flips `count` bytes in the middle of the largest OCDBT data file under `directory` (the
  array data; orbax reads it from state/d/ or state/ocdbt.process_0/d/ depending on how it
  merged the per-process writes, and files of equal size are flipped alike)."""
  files = [p for p in directory.rglob("*") if p.is_file() and p.parent.name == "d"]
  largest = max(p.stat().st_size for p in files)
  for target in (p for p in files if p.stat().st_size == largest):
    data = bytearray(target.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + count):
      data[i] ^= 0x5A
    target.write_bytes(bytes(data))


def test_params_readers_verify_digests(tmp_path):
  rng = np.random.default_rng(1)  # random values: the largest file is the kernel's data
  params = {"dense": {"kernel": rng.standard_normal((256, 256)).astype(np.float32),
                      "bias": np.ones(64, np.float32)}}
  save_params(tmp_path / "params", params)
  assert json.loads((tmp_path / "params" / "unimo_digest.json").read_text())["arrays"]
  np.testing.assert_array_equal(read_params(tmp_path / "params")["dense"]["kernel"],
                                params["dense"]["kernel"])
  _flip_bytes(tmp_path / "params")
  with pytest.raises(CorruptCheckpoint, match=r"\['dense'\]\['kernel'\] differs from the digest"):
    read_params(tmp_path / "params")
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
  single = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  with pytest.raises(CorruptCheckpoint, match="differs from the digest"):
    restore_params(tmp_path / "params", abstract, jax.tree.map(lambda _: single, abstract))


def _two_step_checkpoints(directory):
  """Steps 1 and 2 of a small sharded state (step k's weights = k x w); (abstract, shardings, w)."""
  mesh = make_mesh({"data": 2, "fsdp": 4})
  w = np.random.default_rng(2).standard_normal((64, 256)).astype(np.float32)
  state = {"params": {"w": jax.device_put(w, NamedSharding(mesh, P("fsdp", None)))},
           "step": jnp.int32(3)}
  checkpoints = Checkpointer(directory, every=1, keep=3, use_async=True)
  for step in (1, 2):
    checkpoints.save(step, jax.tree.map(lambda x: x * step, state), {"pos": step}, force=True)
  checkpoints.close()
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
  return abstract, jax.tree.map(lambda x: x.sharding, state), w


@pytest.mark.parametrize("item,content", [
    ("digest/metadata", b"\x8f\xff garbage \x00" * 8),  # not UTF-8, not JSON
    ("digest/metadata", b'["a", "list"]'),               # JSON, not a manifest
    ("digest/metadata", b'{"arrays": 7}'),               # a manifest of the wrong shape
    ("data/metadata", b"\x8f\xff garbage"),
    ("state/manifest.ocdbt", b"\x00" * 64),
])
def test_every_unreadable_item_falls_back_like_a_bad_array(tmp_path, item, content):
  """A digest, data or metadata item that cannot be read or parsed is corruption of that step:
  named, set aside, and the previous step restored."""
  abstract, shardings, w = _two_step_checkpoints(tmp_path / "ckpt")
  (tmp_path / "ckpt" / "2" / item).write_bytes(content)
  checkpoints = Checkpointer(tmp_path / "ckpt", every=1, keep=3)
  with pytest.raises(CorruptCheckpoint, match=r"ckpt/2: "):
    checkpoints.restore(abstract, shardings, 2)
  restored, data_state, step = checkpoints.restore_newest_valid(abstract, shardings,
                                                                set_aside=True)
  assert step == 1 and data_state == {"pos": 1}
  np.testing.assert_array_equal(np.asarray(restored["params"]["w"]), w)
  assert checkpoints.all_steps() == [1] and (tmp_path / "ckpt" / "2.corrupt").is_dir()


def test_orbax_bookkeeping_alone_does_not_make_a_step_corrupt(tmp_path):
  """A garbled step-level _CHECKPOINT_METADATA (orbax's own timestamps) is read around by
  orbax; the arrays still verify against their digests, so the step is restored."""
  abstract, shardings, w = _two_step_checkpoints(tmp_path / "ckpt")
  (tmp_path / "ckpt" / "2" / "_CHECKPOINT_METADATA").write_bytes(b"{not json")
  restored, data_state = Checkpointer(tmp_path / "ckpt", every=1, keep=3).restore(abstract,
                                                                                  shardings, 2)
  assert data_state == {"pos": 2}
  np.testing.assert_array_equal(np.asarray(restored["params"]["w"]), 2 * w)


def test_train_state_checkpoint_records_and_checks_digests(tmp_path):
  mesh = make_mesh({"data": 2, "fsdp": 4})
  w = np.random.default_rng(2).standard_normal((64, 256)).astype(np.float32)
  state = {"params": {"w": jax.device_put(w, NamedSharding(mesh, P("fsdp", None)))},
           "step": jnp.int32(3)}
  checkpoints = Checkpointer(tmp_path / "ckpt", every=1, keep=3, use_async=True)
  for step in (1, 2):
    checkpoints.save(step, jax.tree.map(lambda x: x * step, state), {"pos": step}, force=True)
  checkpoints.close()
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
  shardings = jax.tree.map(lambda x: x.sharding, state)
  _flip_bytes(tmp_path / "ckpt" / "2")
  checkpoints = Checkpointer(tmp_path / "ckpt", every=1, keep=3)
  with pytest.raises(CorruptCheckpoint, match=r"ckpt/2: \['params'\]\['w'\] differs"):
    checkpoints.restore(abstract, shardings)
  restored, data_state, step = checkpoints.restore_newest_valid(abstract, shardings,
                                                                set_aside=True)
  assert step == 1 and data_state == {"pos": 1}
  np.testing.assert_array_equal(np.asarray(restored["params"]["w"]), w)
  assert checkpoints.all_steps() == [1] and (tmp_path / "ckpt" / "2.corrupt").is_dir()


# ---- the command line: preemption, corruption, a full workdir, a lost process -------------------

def _params(workdir, step):
  manager = Checkpointer(workdir / "checkpoints", every=1, keep=1).manager
  return manager.restore(step)["state"]["params"]


def _env(devices=1):
  return dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices))


def _wait_for(predicate, procs, seconds=300):
  deadline = time.time() + seconds
  while not predicate():
    assert all(p.poll() is None for p in procs), "a run ended before the event"
    assert time.time() < deadline, "timed out waiting"
    time.sleep(0.01)


@pytest.mark.slow
def test_sigterm_saves_that_step_and_the_resumed_run_equals_an_uninterrupted_one(
    tmp_path, run_scenes):
  steps = 24
  args = small_run_overrides(run_scenes, steps) + ["--config.checkpoint_every=4",
                                                         "--config.eval_every=24"]
  run_main(main_command(tmp_path / "straight", *args))
  # SIGTERM at a random step; saves every 4 steps are asynchronous, so it often lands in one
  stop_at = random.Random().randint(5, 18)
  workdir = tmp_path / "stopped"
  proc = subprocess.Popen(main_command(workdir, *args), cwd=ROOT, env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  _wait_for(lambda: max(training_losses(workdir), default=0) >= stop_at, [proc])
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-3000:]
  saved = int(re.search(r"preempted: saved step (\d+) to ", out).group(1))
  assert stop_at <= saved < steps, (stop_at, saved)
  assert (workdir / "checkpoints" / str(saved)).is_dir()
  assert not (workdir / "eval_metrics.json").exists()  # stopped, not finished
  resumed = run_main(main_command(workdir, *args))
  assert f"resumed from step {saved} " in resumed.stdout
  straight, losses = training_losses(tmp_path / "straight"), training_losses(workdir)
  assert all(losses[s] == straight[s] for s in range(1, steps + 1))  # bit-identical
  for a, b in zip(jax.tree.leaves(_params(workdir, steps)),
                  jax.tree.leaves(_params(tmp_path / "straight", steps))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _snapshot(directory):
  return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
          for p in directory.rglob("*")}


def _with_file_size_limit(command, limit):
  """`command` (python -m unimo_jax.main ...) run with RLIMIT_FSIZE = limit bytes."""
  python, _, module, *args = command
  code = (f"import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, "
          f"{limit})); sys.argv = [{module!r}] + sys.argv[1:]; "
          f"runpy.run_module({module!r}, run_name='__main__')")
  return [python, "-c", code, *args]


@pytest.mark.slow
def test_corrupt_checkpoints_fall_back_a_full_disk_is_named_none_valid_writes_nothing(
    tmp_path, run_scenes):
  args = small_run_overrides(run_scenes, 12) + ["--config.checkpoint_every=4",
                                                      "--config.keep_checkpoints=3"]
  workdir = tmp_path / "w"

  def run(steps, **kwargs):
    return run_main(main_command(workdir, *args[1:], f"--config.steps={steps}"), **kwargs)

  run(12)
  # the newest checkpoint corrupt: named with its array, the run resumes from the previous one
  _flip_bytes(workdir / "checkpoints" / "12")
  result = run(16)
  assert re.search(r"checkpoints/12: \[.+\] differs from the digest recorded", result.stdout)
  assert "resuming from step 8, the newest checkpoint that verifies" in result.stdout
  assert (workdir / "checkpoints" / "12.corrupt").is_dir()
  assert (workdir / "checkpoints" / "16").is_dir()

  # a full disk at the next save (no file may grow past 64 KiB: what a full disk does to the
  # next array file written): the failed save is named, the previous checkpoint stays valid
  result = run_main(_with_file_size_limit(main_command(workdir, *args[1:], "--config.steps=20"),
                                          64 * 1024), check=False)
  assert result.returncode == 2, result.stderr[-2000:]
  assert re.search(r"error: could not write checkpoint step 20 to \S+/checkpoints \(.*File too "
                   r"large.*\); step 16 in \S+ is intact", result.stderr), result.stderr[-3000:]
  assert "Traceback" not in result.stderr.split("error: could not write")[1]
  result = run(20)
  assert "resumed from step 16 " in result.stdout and "(digests verified)" in result.stdout

  # every checkpoint corrupt (one unreadable): a named error, nothing written, no fresh start
  steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == [12, 16, 20]
  for step in steps[:-1]:
    _flip_bytes(workdir / "checkpoints" / str(step))
  for f in (workdir / "checkpoints" / "20" / "state").rglob("*"):
    if f.is_file() and f.parent.name == "d":
      f.write_bytes(f.read_bytes()[:100])  # truncated
  before = _snapshot(workdir)
  result = run(24, check=False)
  assert result.returncode == 2
  assert re.search(r"error: no checkpoint in \S+checkpoints verifies \(3 tried: ", result.stderr)
  assert "could not be read" in result.stderr and "differs from the digest" in result.stderr
  assert _snapshot(workdir) == before


def _newest_step(workdir):
  return max((int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()),
             default=0)


def _host_lost(proc):
  """SIGKILL of a process and everything it started (its session): what losing its host does."""
  os.killpg(proc.pid, signal.SIGKILL)


def _one_error_line(proc, killed_at):
  _, err = proc.communicate(timeout=120)
  lines = [line for line in err.splitlines() if line.startswith("error:")]
  assert len(lines) == 1, err[-3000:]
  assert "Traceback" not in err and "Check failure" not in err, err[-3000:]
  return proc.returncode, time.time() - killed_at, lines[0]


@pytest.mark.slow
def test_two_processes_preempted_together_then_one_lost_then_the_coordinator_lost(
    tmp_path, run_scenes):
  """SIGTERM to process 1 only: both save the same step and exit 0. Resumed, process 1's host is
  lost: process 0 exits 3 within the timeout with one line naming it. Resumed again, process 0's
  host (the coordination service) is lost: process 1 exits 3 with one line, no abort dump."""
  timeout_s = 10
  workdir = tmp_path / "w"

  def start(steps):
    address = f"127.0.0.1:{_free_port()}"
    args = small_run_overrides(run_scenes, steps) + [
        "--config.checkpoint_every=5", f"--config.distributed.coordinator_address={address}",
        "--config.distributed.num_processes=2", f"--config.distributed.peer_timeout_s={timeout_s}"]
    return [subprocess.Popen(main_command(workdir, *args, f"--config.distributed.process_id={i}"),
                             cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
            for i in range(2)]

  procs = start(steps=400)  # both generate the synthetic scenes: the first rename wins
  _wait_for(lambda: max(training_losses(workdir), default=0) >= 3, procs)
  procs[1].send_signal(signal.SIGTERM)
  outputs = [p.communicate(timeout=180) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outputs]
  saved = {int(re.search(r"preempted: saved step (\d+) ", out).group(1)) for out, _ in outputs}
  assert len(saved) == 1, saved  # the same step on both processes
  assert (workdir / "checkpoints" / str(saved.pop())).is_dir()

  def lose_host(lost, survivor, expected_line):
    """Resumes both, loses `lost`'s host after 5 more steps: `survivor` exits 3 within the
    timeout with exactly `expected_line` (a regex) as its one error line."""
    step = _newest_step(workdir)
    procs = start(steps=4000)
    _wait_for(lambda: _newest_step(workdir) >= step + 5, procs)
    _host_lost(procs[lost])
    code, elapsed, line = _one_error_line(procs[survivor], time.time())
    assert code == 3 and elapsed < timeout_s + 20, (code, elapsed)
    assert re.match(expected_line, line), line
    procs[lost].communicate()

  lose_host(1, 0, r"error: process 0: lost process 1 of 2 \(no heartbeat for 10 s\); last "
                  r"checkpoint: step \d+ in \S+checkpoints; exiting with code 3$")
  lose_host(0, 1, r"error: process 1: lost the coordination service on process 0 .*; last "
                  r"checkpoint: step \d+ in \S+checkpoints; exiting with code 3$")
