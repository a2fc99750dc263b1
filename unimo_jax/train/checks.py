"""Start-up checks of a run: the mesh and batch against the devices, the data against the model.
Each raises ConfigError naming the field, what was expected and what was found, before anything
is compiled or written."""

import os
import pathlib

from unimo_jax.data.formats.records import read_metadata
from unimo_jax.data.formats.tfds_source import is_tfds, read_tfds_metadata
from unimo_jax.parallel import resolve_mesh_shape
from unimo_jax.paths import is_remote
from unimo_jax.train.run_identity import SHAPE_FREE_MODEL_FIELDS, stored_identity
from unimo_jax.errors import ConfigError


def check_workdir_writable(workdir) -> None:
  """A local workdir must be a directory this process can write, or creatable in one; ConfigError
  naming what is in the way. Nothing is created. (A gs:// workdir is checked by its first write.)"""
  if is_remote(workdir):
    return
  path = pathlib.Path(str(workdir))
  existing = path
  while not existing.exists() and existing != existing.parent:
    existing = existing.parent
  if not existing.is_dir():
    raise ConfigError(f"--workdir {path}: expected a directory, found a file at {existing}")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ConfigError(f"--workdir {path}: cannot write in {existing} (a read-only file system or "
                      "no permission); give the run a workdir it can write")


def check_config(config, num_devices: int, batch_sizes: dict) -> dict:
  """Mesh sizes {'data', 'fsdp', 'tensor'} for `num_devices`. batch_sizes: {config field: global
  examples per step} (e.g. {'batch.text': 8, ...} or {'batch_size': 64}); each must split evenly
  over the batch axes, also after division into optimizer.accumulation_steps micro-batches."""
  try:
    sizes = resolve_mesh_shape(config.mesh, num_devices)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  batch_devices = sizes["data"] * sizes["fsdp"]
  accumulation = max(int(config.optimizer.accumulation_steps), 1)
  for field, size in batch_sizes.items():
    size = int(size)
    if size < 0 or size % batch_devices:
      raise ConfigError(f"{field}: {size} examples cannot be split evenly over the "
                        f"{batch_devices} devices of the batch axes (data={sizes['data']} x "
                        f"fsdp={sizes['fsdp']})")
    if size and (size % accumulation or (size // accumulation) % batch_devices):
      raise ConfigError(f"{field}: {size} / accumulation_steps {accumulation} is not divisible "
                        f"by the {batch_devices} devices of the batch axes")
  if not any(int(s) > 0 for s in batch_sizes.values()):
    raise ConfigError(f"batch: expected at least one positive batch size, found {batch_sizes}")
  if config.steps <= 0:
    raise ConfigError(f"steps: expected a positive number, found {config.steps}")
  return sizes


def check_init_from_model(model_config, init_from: str) -> None:
  """When init_from is a workdir (with its config.json), its model must agree with this run's in
  SHAPE_FREE_MODEL_FIELDS; a params checkpoint or step directory carries no config to check."""
  stored = stored_identity(init_from) if init_from else None
  if stored is None:
    return
  for field, default in SHAPE_FREE_MODEL_FIELDS.items():
    theirs, ours = stored["model"].get(field, default), model_config.get(field, default)
    if theirs != ours:
      raise ConfigError(f"model.{field}: init_from {init_from} was trained with {theirs!r}, this "
                        f"run has {ours!r}; set --config.model.{field}={theirs} (the parameters "
                        "load either way, but would be read differently)")


def check_data_against_model(model_config, tokenizer, tokenizer_path, shard_dirs: dict,
                             data_cfg=None) -> None:
  """The tokenizer fits the embedding table and is the one every dataset's token ids were
  written with, and every dataset's region sizes (from its metadata: a shard directory's
  metadata.json, a tfds:... dataset's info) are the model's.
  shard_dirs: {name for errors: directory or tfds:... name}; data_cfg: where tfds datasets are
  (data.tfds_data_dir, data.tfds_features)."""
  if tokenizer.vocab_size > model_config.vocab_size:
    raise ConfigError(f"model.vocab_size {model_config.vocab_size} is smaller than the "
                      f"tokenizer's {tokenizer.vocab_size} ({tokenizer_path})")
  for name, path in shard_dirs.items():
    if not path:
      continue
    meta = read_tfds_metadata(path, data_cfg) if is_tfds(path) else read_metadata(path)
    check_vocabulary(meta.get("vocabulary"), tokenizer, tokenizer_path, f"{name} {path}")
    for key, field in (("region_feature_dim", "region_feature_dim"),
                       ("num_classes", "num_region_classes")):
      if meta.get(key) and meta[key] != model_config[field]:
        raise ConfigError(f"{name} {path} has {key}={meta[key]}, the model expects "
                          f"model.{field}={model_config[field]}")


def check_vocabulary(recorded, tokenizer, tokenizer_path, where: str) -> None:
  """A dataset that stores token ids records the vocabulary it was tokenized with (metadata
  'vocabulary': size and special ids); ConfigError when the run's tokenizer differs in any of
  them. Datasets storing text, or recording no vocabulary, are tokenized at read: nothing to
  check."""
  if not isinstance(recorded, dict):
    return
  ours = tokenizer.describe()
  for key in ("size", *tokenizer.special_ids):
    if key in recorded and recorded[key] != ours.get(key):
      raise ConfigError(f"{where} was tokenized with a vocabulary whose {key} is "
                        f"{recorded[key]}, data.tokenizer {tokenizer_path} has {ours.get(key)}; "
                        "use the tokenizer the dataset was written with")
