"""What a workdir's checkpoints were trained as, recorded with the run and compared at resume.

A checkpoint restores under any model config whose parameter shapes agree, and several fields
change what the parameters mean without changing a shape (pooling, the image input, the
tokenizer's vocabulary). So every start writes <workdir>/identity.json: the model fields below
and the tokenizer's identity (type, size, special ids, a digest of its content). A later start
on the same checkpoints compares them before anything is restored or written, and a mismatch
stops the run with one line naming the field, the stored and the new value. Workdirs written
before identity.json existed are compared on the model fields of their config.json.
"""

import json

from unimo_jax.errors import ConfigError
from unimo_jax.paths import as_path
from unimo_jax.train.workdir import CONFIG_FILE

IDENTITY_FILE = "identity.json"
# Model fields that change the parameters' shapes or what they mean.
MODEL_FIELDS = ("vocab_size", "hidden_size", "num_layers", "num_heads", "mlp_dim",
                "max_position_embeddings", "role_type_size", "turn_type_size", "tie_lm_head",
                "image_input", "region_feature_dim", "num_region_classes", "image_size",
                "patch_size", "image_channels", "pooling", "contrastive_dim", "scan_layers")
# Model fields that change the forward pass but not the parameters' shapes: a checkpoint restores
# under either value, so a mismatch with the run that wrote it would go unnoticed (init_from
# checks these; field: its value in configs that predate it).
SHAPE_FREE_MODEL_FIELDS = {"pooling": "first"}
# Values of fields added after the first release, for config.json files that predate them.
DEFAULTS = {**SHAPE_FREE_MODEL_FIELDS, "role_type_size": 0, "turn_type_size": 0,
            "tie_lm_head": True, "image_input": "regions"}


def run_identity(model_config, tokenizer) -> dict:
  """{'model': {field: value}, 'tokenizer': identity or None (a run that reads no data)}."""
  model = {f: model_config.get(f, DEFAULTS.get(f)) for f in MODEL_FIELDS}
  return {"model": model, "tokenizer": tokenizer.identity() if tokenizer is not None else None}


def stored_identity(workdir):
  """The identity recorded in `workdir` (identity.json, else config.json's model fields), or
  None when the workdir records neither."""
  workdir = as_path(workdir)
  for name in (IDENTITY_FILE, CONFIG_FILE):
    path = workdir / name
    if not path.exists():
      continue
    try:
      stored = json.loads(path.read_text())
    except ValueError:
      raise ConfigError(f"{path}: expected JSON, found unreadable content; it records what the "
                        "checkpoints there were trained as") from None
    model = stored.get("model", {}) if isinstance(stored, dict) else {}
    return {"model": {f: model.get(f, DEFAULTS.get(f)) for f in MODEL_FIELDS if
                      f in model or f in DEFAULTS},
            "tokenizer": stored.get("tokenizer") if name == IDENTITY_FILE else None}
  return None


def check_resume_identity(workdir, identity: dict) -> None:
  """ConfigError naming the first field in which `identity` (this run's) differs from what the
  workdir's checkpoints were trained with; nothing is read beyond the workdir's JSON files."""
  stored = stored_identity(workdir)
  if stored is None:
    return
  where = as_path(workdir) / "checkpoints"
  for field, theirs in stored["model"].items():
    ours = identity["model"].get(field)
    if theirs is not None and ours != theirs:
      raise ConfigError(f"model.{field}: the checkpoints in {where} were trained with "
                        f"{theirs!r}, this run has {ours!r}; resume with "
                        f"--config.model.{field}={theirs} or give this run another --workdir")
  theirs, ours = stored.get("tokenizer"), identity.get("tokenizer")
  if theirs and ours and theirs != ours:
    differs = next(k for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k))
    raise ConfigError(f"data.tokenizer: the checkpoints in {where} were trained with a tokenizer "
                      f"whose {differs} is {theirs.get(differs)!r}, this run's has "
                      f"{ours.get(differs)!r}; resume with the tokenizer they were trained with")


def write_identity(workdir, identity: dict) -> None:
  (as_path(workdir) / IDENTITY_FILE).write_text(json.dumps(identity, indent=2))
