"""Paths that may be local or remote (gs://...), through etils.epath.

Workdirs (config.json, metrics, checkpoints, predictions) may live on GCS: orbax writes the
checkpoints there itself (tensorstore), and the small files go through epath, whose GCS backend
needs `pip install 'etils[epath-gcs]'` (the `gcs` extra of this package). Generated data (the
synthetic scenes) is always written locally.
"""

import pathlib
import tempfile

from etils import epath


def is_remote(path) -> bool:
  return "://" in str(path)


def as_path(path) -> epath.Path:
  """An epath.Path: absolute for local paths, unchanged for URLs."""
  return epath.Path(path) if is_remote(path) else epath.Path(path).absolute()


def local_dir(workdir, name: str) -> pathlib.Path:
  """<workdir>/<name> for a local workdir; a folder under the system temp dir for a remote one
  (data generation writes local files)."""
  if is_remote(workdir):
    return pathlib.Path(tempfile.gettempdir()) / f"unimo_jax_{name}"
  return pathlib.Path(workdir) / name
