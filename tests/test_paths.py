"""Remote (gs://) workdirs: the small files go through etils.epath. Here epath's gs:// backend is
replaced by a mock that maps gs://bucket/... onto a local folder, so the writes are observable."""

import json
import os
import pathlib

from etils import epath
from etils.epath import testing as epath_testing

from unimo_jax.paths import as_path, is_remote, local_dir
from unimo_jax.train.metrics import MetricWriter


def _local(root, path):
  path = os.fspath(path)
  return str(root / path[len("gs://"):]) if path.startswith("gs://") else path


def _mock(root):
  def forward(name):
    def fn(original, path, *args, **kwargs):
      return original(_local(root, path), *args, **kwargs)
    return fn
  return epath_testing.mock_epath(**{n: forward(n) for n in (
      "open", "exists", "isdir", "listdir", "makedirs", "mkdir", "glob", "remove", "stat")})


def test_local_and_remote_paths():
  assert is_remote("gs://b/w") and not is_remote("/tmp/w")
  assert str(as_path("gs://b/w") / "checkpoints") == "gs://b/w/checkpoints"
  assert as_path("rel").is_absolute()
  assert local_dir("gs://b/w", "synthetic_scenes").name == "unimo_jax_synthetic_scenes"
  assert local_dir("/tmp/w", "synthetic_scenes") == pathlib.Path("/tmp/w/synthetic_scenes")


def test_metric_writer_rewrites_a_remote_jsonl_without_losing_rows(tmp_path, monkeypatch):
  monkeypatch.setattr("tensorboardX.SummaryWriter", lambda logdir: _NullWriter())
  with _mock(tmp_path):
    first = MetricWriter("gs://bucket/run", enabled=True)
    first.write(1, {"loss": 2.0})
    first.write(2, {"loss": 1.5})
    first.close()
    second = MetricWriter("gs://bucket/run", enabled=True)  # a resumed run
    second.write(3, {"loss": 1.0}, prefix="eval")
    second.close()
    text = epath.Path("gs://bucket/run/metrics.jsonl").read_text()
  rows = [json.loads(line) for line in text.splitlines()]
  assert [(r["step"], r["split"], r["loss"]) for r in rows] == [
      (1, "train", 2.0), (2, "train", 1.5), (3, "eval", 1.0)]
  assert (tmp_path / "bucket" / "run" / "metrics.jsonl").exists()


class _NullWriter:
  def add_scalar(self, *args):
    pass

  def flush(self):
    pass

  def close(self):
    pass
