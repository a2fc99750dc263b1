"""Task name -> task class: config.task.name names a module of this package that defines TASK,
so adding a task is one file here plus its configs/<task>.py."""

import importlib
import pkgutil

import unimo_jax.tasks


def _modules() -> list:
  return [m.name for m in pkgutil.iter_modules(unimo_jax.tasks.__path__)]


def task_names() -> list:
  """The modules of unimo_jax.tasks that define a task (a TASK class)."""
  return sorted(name for name in _modules()
                if hasattr(importlib.import_module(f"unimo_jax.tasks.{name}"), "TASK"))


def task_class(name: str):
  module = importlib.import_module(f"unimo_jax.tasks.{name}") if name in _modules() else None
  if module is None or not hasattr(module, "TASK"):
    from unimo_jax.errors import ConfigError
    raise ConfigError(f"task.name: expected one of {task_names()}, found {name!r}")
  return module.TASK


def make_task(config, workdir, mesh=None, **kwargs):
  """The task of `config` (config.task.name); kwargs: data_paths, tokenizer."""
  return task_class(config.task.name)(config, workdir, mesh, **kwargs)
