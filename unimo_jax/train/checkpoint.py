"""Orbax checkpoints of the train state and the data-iterator state.

A step directory holds 'state' (params, optimizer state, step, rng as sharded arrays) and 'data'
(the JSON iterator state). Restoring takes an abstract state whose leaves carry the target
shardings, so a checkpoint written on one mesh loads onto another.
"""

import jax
import orbax.checkpoint as ocp

from unimo_jax.paths import as_path


class Checkpointer:
  def __init__(self, directory, *, every: int, keep: int, use_async: bool = True):
    self.directory = as_path(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, save_interval_steps=max(int(every), 1),
        enable_async_checkpointing=use_async, create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self):
    return self.manager.latest_step()

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
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def save_params(path, params):
  """Writes a params-only checkpoint (e.g. converted weights) usable as config.init_from."""
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(as_path(path), params)
  checkpointer.wait_until_finished()


def read_params(path):
  """Host params of a workdir (its latest step), a step directory (<step>/state) or a params
  checkpoint written by save_params; FileNotFoundError naming what was expected otherwise."""
  path = as_path(path)
  if (path / "checkpoints").is_dir() or (path / "config.json").exists():
    root = path / "checkpoints"
    steps = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.is_dir() else []
    if not steps:
      raise FileNotFoundError(f"{path}: the workdir has no checkpoint (checkpoints/<step>)")
    path = root / str(steps[-1])
  if (path / "state").is_dir():
    return ocp.StandardCheckpointer().restore(path / "state")["params"]
  if path.is_dir():
    return ocp.StandardCheckpointer().restore(path)
  raise FileNotFoundError(f"{path}: expected a workdir, a step directory or a params checkpoint")


def load_params(path, abstract_params, shardings):
  """Params from a params-only checkpoint written by save_params, placed as `shardings`."""
  path = as_path(path)
  if not path.exists():
    raise FileNotFoundError(f"init_from {path}: no such checkpoint")
  target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract_params, shardings)
  return ocp.StandardCheckpointer().restore(path, target)
