"""The files a run writes into its workdir (process 0 writes them); the run's errors are in
unimo_jax/errors.py.

  start_workdir      creates the workdir with config.json (the config as run) and data_paths.json
                     (where its data was found or generated)
  read_data_paths    the data paths a workdir's run used (for evaluation, prediction, inference)
  write_eval_metrics eval_metrics.json, the latest evaluation
  write_predictions  predictions.jsonl, one JSON row per example
  error_summary      an exception as one line, for the run's one-line messages
"""

import json

import jax
import numpy as np

from unimo_jax.paths import as_path

CONFIG_FILE = "config.json"
DATA_PATHS_FILE = "data_paths.json"
EVAL_METRICS_FILE = "eval_metrics.json"
PREDICTIONS_FILE = "predictions.jsonl"




def start_workdir(workdir, config, data_paths: dict | None = None) -> bool:
  """Creates the workdir and writes the config (and the resolved data paths) there on process 0;
  True on process 0."""
  workdir = as_path(workdir)
  primary = jax.process_index() == 0
  if primary:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / CONFIG_FILE).write_text(config.to_json_best_effort(indent=2))
    if data_paths is not None:
      (workdir / DATA_PATHS_FILE).write_text(json.dumps(data_paths, indent=2))
  return primary


def read_data_paths(workdir) -> dict | None:
  """The data paths a run wrote into `workdir`, or None when it wrote none."""
  path = as_path(workdir) / DATA_PATHS_FILE
  return json.loads(path.read_text()) if path.exists() else None


def write_eval_metrics(workdir, metrics: dict):
  """Writes eval_metrics.json on process 0; returns its path (None elsewhere)."""
  if jax.process_index() != 0:
    return None
  path = as_path(workdir) / EVAL_METRICS_FILE
  path.write_text(json.dumps(metrics, indent=2, default=_json_default))
  return path


def write_predictions(workdir, rows, name: str = PREDICTIONS_FILE):
  """Writes one JSON line per prediction row on process 0; returns the path (None elsewhere)."""
  if jax.process_index() != 0:
    return None
  workdir = as_path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  path = workdir / name
  path.write_text("".join(json.dumps(row, default=_json_default) + "\n" for row in rows))
  return path


def _json_default(value):
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f"cannot write {type(value).__name__} to JSON")


def error_summary(error: BaseException, limit: int = 300) -> str:
  """'<type>: <first line of the message>'; a longer line keeps its start and its end (where
  storage errors put the OS error), about `limit` characters in all."""
  lines = str(error).strip().splitlines()
  text = f"{type(error).__name__}: {lines[0] if lines else ''}"
  if len(text) <= limit:
    return text
  half = max(limit // 2 - 3, 1)
  return f"{text[:half]} ... {text[-half:]}"
