"""Orbax checkpoints of the train state and the data-iterator state, each with a digest of every
array (train/digest.py) that restore checks.

A step directory holds 'state' (params, optimizer state, step, rng as sharded arrays), 'data'
(the JSON iterator state) and 'digest' (the manifest: one digest per array and one of the
iterator state), committed together by orbax. Restoring takes an abstract state whose leaves
carry the target shardings, so a checkpoint written on one mesh loads onto another; a restored
state whose digests differ from the manifest is refused (CorruptCheckpoint), and a run falls
back to the newest checkpoint that verifies. A params checkpoint (save_params) keeps its manifest
in DIGEST_FILE inside its directory.
"""

import contextlib
import json
import os
import re
import sys
import tempfile

import jax
import numpy as np
import orbax.checkpoint as ocp

from unimo_jax.errors import CheckpointWriteError, CorruptCheckpoint
from unimo_jax.paths import as_path
from unimo_jax.train import digest
from unimo_jax.train.workdir import error_summary

DIGEST_FILE = "unimo_digest.json"
CORRUPT_SUFFIX = ".corrupt"


class Checkpointer:
  """create=False: read-only use; a missing directory then has no checkpoints (nothing made)."""

  def __init__(self, directory, *, every: int, keep: int, use_async: bool = True,
               create: bool = True):
    self.directory = as_path(directory)
    self.manager = None
    self._writing = None  # the step of a save that may still be in flight
    if create or self.directory.exists():
      options = ocp.CheckpointManagerOptions(
          max_to_keep=keep, save_interval_steps=max(int(every), 1),
          enable_async_checkpointing=use_async, create=create)
      self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self):
    return None if self.manager is None else self.manager.latest_step()

  def all_steps(self) -> list:
    return [] if self.manager is None else sorted(self.manager.all_steps())

  def save(self, step: int, state, data_state: dict, force: bool = False) -> bool:
    """Saves (asynchronously when configured) with the digests of `state` and `data_state`;
    False when the step is not due. CheckpointWriteError when the storage refuses."""
    step = int(step)
    if not (force or self.manager.should_save(step)):
      return False
    if self._writing is not None:  # an asynchronous save that failed says so here, by its step
      with self._write_errors(self._writing):
        self.manager.wait_until_finished()
    record = digest.manifest(state, data_state)
    with self._write_errors(step):
      saved = self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
          digest=ocp.args.JsonSave(record)), force=force)
    self._writing = step
    return saved

  def restore(self, abstract_state, shardings, step=None):
    """(state, data_state) of `step` (default: the latest), placed as `shardings` and checked
    against the recorded digests; CorruptCheckpoint naming the step and the array otherwise."""
    step = self.latest_step() if step is None else int(step)
    where = self.directory / str(step)
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract_state, shardings)
    with _unreadable(where):  # every item: the arrays, the iterator state, the digests
      out = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
      record = read_manifest(where / "digest")
    record = _verify(where, record, out["state"])
    if record and "data" in record and record["data"] != digest.json_digest(out["data"]):
      raise CorruptCheckpoint(f"{where}: the data-iterator state differs from its digest")
    return out["state"], out["data"]

  def restore_newest_valid(self, abstract_state, shardings, *, set_aside: bool):
    """(state, data_state, step) of the newest checkpoint that verifies, saying which newer ones
    failed and why. set_aside=True (training) renames those to <step>.corrupt so the run can
    write those steps again. CorruptCheckpoint naming each failure when none verifies."""
    failed = []
    for step in reversed(self.all_steps()):
      try:
        with _without_closed_loop_noise():
          state, data_state = self.restore(abstract_state, shardings, step)
      except CorruptCheckpoint as e:
        print(f"error: checkpoint {e}; trying an older one", flush=True)
        failed.append((step, str(e)))
        continue
      if failed:
        print(f"resuming from step {step}, the newest checkpoint that verifies "
              f"({len(failed)} newer one(s) failed)", flush=True)
        if set_aside:
          self._set_aside([s for s, _ in failed])
      return state, data_state, step
    reasons = "; ".join(reason for _, reason in failed)
    raise CorruptCheckpoint(f"no checkpoint in {self.directory} verifies ({len(failed)} tried: "
                            f"{reasons}); remove or repair them to start afresh")

  def _set_aside(self, steps) -> None:
    from jax.experimental import multihost_utils
    if jax.process_index() == 0:
      for step in steps:
        path = self.directory / str(step)
        path.rename(self.directory / f"{step}{CORRUPT_SUFFIX}")
        print(f"moved {path} aside to {path}{CORRUPT_SUFFIX}", flush=True)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("unimo_jax: corrupt checkpoints set aside")
    self.manager.reload()

  def wait(self):
    if self.manager is not None:
      with self._write_errors(self._writing):
        self.manager.wait_until_finished()

  def close(self):
    if self.manager is not None:
      try:
        self.wait()
      finally:
        self.manager.close()

  @contextlib.contextmanager
  def _write_errors(self, step):
    """Turns a failed write into CheckpointWriteError naming the step, the directory and the
    newest checkpoint that is intact."""
    try:
      with _without_closed_loop_noise():
        yield
    except Exception as e:
      intact = [s for s in self.all_steps() if s != step]
      kept = (f"step {intact[-1]} in {self.directory} is intact" if intact
              else "no earlier checkpoint exists")
      raise CheckpointWriteError(f"could not write checkpoint step {step} to {self.directory} "
                                 f"({error_summary(e)}); {kept}") from None


# After a read fails, tensorstore's reader threads still call back into the asyncio loop that
# orbax has closed, and each callback prints its RuntimeError's traceback from C++ (hundreds of
# them for one corrupt manifest) while the run has already named the checkpoint and moved on.
_CLOSED_LOOP_NOISE = (
    "Traceback (most recent call last):", "self._check_closed()",
    "raise RuntimeError('Event loop is closed')", "RuntimeError: Event loop is closed",
    "RuntimeError: ", "Event loop is closed")
_LEFTOVER = re.compile(r"[\s:]*(RuntimeError)?[\s:]*")  # pieces of interleaved tracebacks
_CLOSED_LOOP_FRAME = re.compile(r'\s*File "[^"]*asyncio/base_events.py", line \d+, in \w+')


@contextlib.contextmanager
def _without_closed_loop_noise():
  """Runs the block with the process's stderr (fd 2) captured, then writes back what it
  printed less the closed-loop callbacks' tracebacks (only those: any other line is kept).
  Single-process runs only: in a multi-process run a lost peer's one line (train/peers.py) and
  the coordination agent's abort are written to fd 2 just before the process ends, and must not
  wait in a capture."""
  if jax.process_count() > 1:
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      sys.stderr.write(without_closed_loop_tracebacks(captured.read().decode(errors="replace")))
      sys.stderr.flush()


def without_closed_loop_tracebacks(text: str) -> str:
  """`text` less the closed-loop callbacks' tracebacks (interleaved ones too); other lines kept."""
  if "Event loop is closed" not in text and "base_events.py" not in text:
    return text  # (a process that exits mid-traceback leaves only its first lines)
  text = _CLOSED_LOOP_FRAME.sub("", text)
  for fragment in _CLOSED_LOOP_NOISE:
    text = text.replace(fragment, "")
  return "".join(line + "\n" for line in text.splitlines()
                 if line.strip() and not _LEFTOVER.fullmatch(line))


@contextlib.contextmanager
def _unreadable(where):
  """Any error reading a checkpoint (orbax and tensorstore report unreadable files in several
  types) as a CorruptCheckpoint naming `where`."""
  try:
    yield
  except Exception as e:
    raise CorruptCheckpoint(f"{where}: could not be read ({error_summary(e)})") from None


def _verify(where, record, tree, prefix: str = ""):
  """Checks `tree` as read from `where` against its manifest `record` (None: a warning, nothing
  to check); CorruptCheckpoint naming the first array that differs. Returns `record`."""
  if record is None:
    print(f"warning: {where} records no digests (written before they were kept): read "
          "unverified", flush=True)
    return None
  if not isinstance(record, dict) or not isinstance(record.get("arrays"), dict):
    found = (type(record).__name__ if not isinstance(record, dict) else
             f"'arrays' of type {type(record.get('arrays')).__name__}")
    raise CorruptCheckpoint(f"{where}: its digest record is not a digest manifest (expected a "
                            f"JSON object with an 'arrays' object, found {found})")
  bad = digest.mismatches(record, tree, prefix)
  if bad:
    raise CorruptCheckpoint(f"{where}: {digest.describe(bad)} differs from the digest recorded "
                            "when it was written")
  return record


def read_manifest(path):
  """The digest manifest stored at `path` (a step's 'digest' item or a DIGEST_FILE), or None."""
  path = as_path(path)
  if path.is_dir():
    return ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(path)
  if path.exists():
    return json.loads(path.read_text())
  return None


def save_params(path, params):
  """Writes a params-only checkpoint (e.g. converted weights) usable as config.init_from, with
  its digests in DIGEST_FILE."""
  path = as_path(path)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(path, params)
  checkpointer.wait_until_finished()
  record = digest.manifest(params)
  if jax.process_index() == 0:
    (path / DIGEST_FILE).write_text(json.dumps(record, indent=1))


def params_location(path) -> tuple:
  """(directory, nested) of the parameters of a workdir (its latest step), a step directory
  (<step>/state) or a params checkpoint written by save_params; nested is True when they are the
  'params' entry of a train state. FileNotFoundError naming what was expected otherwise."""
  path = as_path(path)
  if (path / "checkpoints").is_dir() or (path / "config.json").exists():
    root = path / "checkpoints"
    steps = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.is_dir() else []
    if not steps:
      raise FileNotFoundError(f"{path}: the workdir has no checkpoint (checkpoints/<step>)")
    path = root / str(steps[-1])
  if (path / "state").is_dir():
    return path / "state", True
  if path.is_dir():
    return path, False
  raise FileNotFoundError(f"{path}: expected a workdir, a step directory or a params checkpoint")


def _stored_params(directory, nested):
  """The stored parameter tree's metadata (shapes and dtypes; no array read)."""
  with _unreadable(directory):
    tree = ocp.PyTreeCheckpointHandler().metadata(directory).tree
  return tree["params"] if nested else tree


def stored_param_keys(path) -> set:
  """The top-level names of the parameter tree stored at `path` (no array read)."""
  directory, nested = params_location(path)
  tree = _stored_params(directory, nested)
  return set(tree) if hasattr(tree, "keys") else set()


def _restore(directory, nested, target, restore_args):
  with _unreadable(directory):
    return _restore_tree(directory, nested, target, restore_args)


def _restore_tree(directory, nested, target, restore_args):
  if not nested:
    return ocp.PyTreeCheckpointer().restore(directory, args=ocp.args.PyTreeRestore(
        item=target, restore_args=restore_args))
  out = ocp.PyTreeCheckpointer().restore(directory, args=ocp.args.PyTreeRestore(
      item={"params": target}, restore_args={"params": restore_args}, partial_restore=True))
  return out["params"]


def read_params(path):
  """Host (numpy) params of a workdir, a step directory or a params checkpoint; only the
  parameters are read, not the optimizer state. CorruptCheckpoint when they differ from the
  recorded digests."""
  directory, nested = params_location(path)
  stored = _stored_params(directory, nested)
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), stored)
  return _verified(directory, nested, _restore(directory, nested, stored, restore_args))


def restore_params(path, abstract_params, shardings):
  """Params of a workdir, a step directory or a params checkpoint, restored straight onto
  `shardings` and checked against the recorded digests; stored in the other layer layout
  (unrolled vs scanned, e.g. converted RoBERTa for a scanned model) they are read on the host,
  re-laid out and placed. ValueError naming the first array whose name or shape is not the
  model's; CorruptCheckpoint (a ValueError) naming one whose values differ from its digest."""
  from unimo_jax.model.params import layer_layouts_differ, matching_layer_layout
  directory, nested = params_location(path)
  stored = _stored_params(directory, nested)
  if layer_layouts_differ(stored, abstract_params):
    host = matching_layer_layout(read_params(path), abstract_params)
    _check_tree(path, abstract_params, host)
    return jax.device_put(host, shardings)
  _check_tree(path, abstract_params, stored)
  target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract_params, shardings)
  restored = _restore(directory, nested, target,
                      ocp.checkpoint_utils.construct_restore_args(target))
  return _verified(directory, nested, restored)


def _verified(directory, nested, params):
  """`params` as read from `directory`, after checking them against the manifest recorded with
  them (a step's 'digest' item, or a params checkpoint's DIGEST_FILE)."""
  record = read_manifest(directory.parent / "digest" if nested else directory / DIGEST_FILE)
  _verify(directory, record, params, prefix="['params']" if nested else "")
  return params


def _check_tree(path, abstract_params, stored) -> None:
  """ValueError naming what differs between the model's parameter tree and a stored one."""
  expected, found = jax.tree.structure(abstract_params), jax.tree.structure(stored)
  if expected != found:
    missing = sorted(set(_names(abstract_params)) - set(_names(stored)))[:3]
    extra = sorted(set(_names(stored)) - set(_names(abstract_params)))[:3]
    raise ValueError(f"{path}: the parameter tree does not match config.model (expected "
                     f"{expected.num_leaves} arrays, found {found.num_leaves}; missing e.g. "
                     f"{missing}, unexpected e.g. {extra}); check the preset and image_input")
  for (key, a), b in zip(jax.tree_util.tree_leaves_with_path(abstract_params),
                         jax.tree.leaves(stored)):
    if tuple(a.shape) != tuple(b.shape):
      raise ValueError(f"{path}: {jax.tree_util.keystr(key)} expected shape {tuple(a.shape)}, "
                       f"found {tuple(b.shape)}")


def _names(tree) -> list:
  return [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_leaves_with_path(tree)]
