"""Orbax checkpoints of the train state and the data-iterator state.

A step directory holds 'state' (params, optimizer state, step, rng as sharded arrays) and 'data'
(the JSON iterator state). Restoring takes an abstract state whose leaves carry the target
shardings, so a checkpoint written on one mesh loads onto another.
"""

import jax
import numpy as np
import orbax.checkpoint as ocp

from unimo_jax.paths import as_path


class Checkpointer:
  """create=False: read-only use; a missing directory then has no checkpoints (nothing made)."""

  def __init__(self, directory, *, every: int, keep: int, use_async: bool = True,
               create: bool = True):
    self.directory = as_path(directory)
    self.manager = None
    if create or self.directory.exists():
      options = ocp.CheckpointManagerOptions(
          max_to_keep=keep, save_interval_steps=max(int(every), 1),
          enable_async_checkpointing=use_async, create=create)
      self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self):
    return None if self.manager is None else self.manager.latest_step()

  def save(self, step: int, state, data_state: dict, force: bool = False) -> bool:
    return self.manager.save(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)), force=force)

  def restore(self, abstract_state, shardings, step=None):
    """(state, data_state) of `step` (default: the latest), placed as `shardings`."""
    step = self.latest_step() if step is None else step
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract_state, shardings)
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
    return out["state"], out["data"]

  def wait(self):
    if self.manager is not None:
      self.manager.wait_until_finished()

  def close(self):
    if self.manager is not None:
      self.manager.wait_until_finished()
      self.manager.close()


def save_params(path, params):
  """Writes a params-only checkpoint (e.g. converted weights) usable as config.init_from."""
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(as_path(path), params)
  checkpointer.wait_until_finished()


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
  """The stored parameter tree's metadata (shapes and dtypes; nothing read)."""
  tree = ocp.PyTreeCheckpointHandler().metadata(directory).tree
  return tree["params"] if nested else tree


def _restore(directory, nested, target, restore_args):
  if not nested:
    return ocp.PyTreeCheckpointer().restore(directory, args=ocp.args.PyTreeRestore(
        item=target, restore_args=restore_args))
  out = ocp.PyTreeCheckpointer().restore(directory, args=ocp.args.PyTreeRestore(
      item={"params": target}, restore_args={"params": restore_args}, partial_restore=True))
  return out["params"]


def read_params(path):
  """Host (numpy) params of a workdir, a step directory or a params checkpoint; only the
  parameters are read, not the optimizer state."""
  directory, nested = params_location(path)
  stored = _stored_params(directory, nested)
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), stored)
  return _restore(directory, nested, stored, restore_args)


def restore_params(path, abstract_params, shardings):
  """Params of a workdir, a step directory or a params checkpoint, restored straight onto
  `shardings`; stored in the other layer layout (unrolled vs scanned, e.g. converted RoBERTa
  for a scanned model) they are read on the host, re-laid out and placed. ValueError naming the
  first array whose name or shape is not the model's."""
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
  return _restore(directory, nested, target, ocp.checkpoint_utils.construct_restore_args(target))


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
