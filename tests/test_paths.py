"""Remote (gs://) workdirs: the small files go through etils.epath. Here epath's gs:// backend is
replaced by a mock that maps gs://bucket/... onto a local folder, so the writes are observable."""

import os
import pathlib

from etils.epath import testing as epath_testing

from unimo_jax.paths import as_path, is_remote, local_dir
from unimo_jax.train.metric_log import MetricWriter, read_metric_rows


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


def test_metric_writer_keeps_every_row_of_resumed_runs_on_a_remote_workdir(tmp_path,
                                                                           monkeypatch):
  monkeypatch.setattr("tensorboardX.SummaryWriter", lambda logdir, **kw: _NullWriter())
  with _mock(tmp_path):
    first = MetricWriter("gs://bucket/run", enabled=True)  # rows sent at close (60 s interval)
    first.write(1, {"loss": 2.0})
    first.write(2, {"loss": 1.5})
    assert not list((tmp_path / "bucket" / "run" / "metrics").iterdir())  # still buffered
    first.close()
    second = MetricWriter("gs://bucket/run", enabled=True)  # a resumed run
    second.write(3, {"loss": 1.0}, prefix="eval")
    second.close()
    rows = read_metric_rows("gs://bucket/run")
  assert [(r["step"], r["split"], r["loss"]) for r in rows] == [
      (1, "train", 2.0), (2, "train", 1.5), (3, "eval", 1.0)]
  assert sorted(p.name for p in (tmp_path / "bucket" / "run" / "metrics").iterdir()) == [
      "part-000000.jsonl", "part-000001.jsonl"]
  local = MetricWriter(tmp_path / "local", enabled=True)
  local.write(1, {"loss": 2.0})
  local.close()
  assert read_metric_rows(tmp_path / "local") == [{"step": 1, "split": "train", "loss": 2.0}]


def test_a_row_still_being_written_is_not_read(tmp_path):
  """A reader that polls metrics.jsonl while a run appends can see a row's first bytes only: that
  partial row is left out (json would fail on it), and read once it is complete."""
  row = '{"step": 2, "split": "train", "loss": 1.5}'
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1, "split": "train", "loss": 2.0}\n' + row[:25])
  assert read_metric_rows(tmp_path) == [{"step": 1, "split": "train", "loss": 2.0}]
  path.write_text(path.read_text() + row[25:] + "\n")
  assert [r["step"] for r in read_metric_rows(tmp_path)] == [1, 2]


def test_remote_bytes_per_log_step_stay_constant(tmp_path, monkeypatch):
  """Written bytes per log step, counted at the mocked gs:// backend's open(), over a 200-step
  run that sends at every step: the same at step 200 as at step 1 (the old whole-file rewrite
  grew linearly). The event file is flushed at the sync, not at every write."""
  written = {}

  def counting_open(original, path, mode="r", *args, **kwargs):
    handle = original(_local(tmp_path, path), mode, *args, **kwargs)
    if "w" in mode or "a" in mode:
      write = handle.write
      def counted(data):
        written[os.fspath(path)] = written.get(os.fspath(path), 0) + len(data)
        return write(data)
      handle.write = counted
    return handle

  flushes = []
  class Events(_NullWriter):
    def __init__(self, logdir, flush_secs=120):
      self.flush_secs = flush_secs
    def flush(self):
      flushes.append(1)
  monkeypatch.setattr("tensorboardX.SummaryWriter", Events)
  forward = {n: (lambda n: lambda original, path, *a, **k: original(_local(tmp_path, path), *a,
                                                                   **k))(n)
             for n in ("exists", "isdir", "listdir", "makedirs", "mkdir", "glob", "remove",
                       "stat")}
  per_step = []
  with epath_testing.mock_epath(open=counting_open, **forward):
    writer = MetricWriter("gs://bucket/run", enabled=True, sync_seconds=0.0)
    for step in range(1, 201):
      before = sum(written.values())
      writer.write(step, {"loss": 0.25, "lr": 1e-4})
      per_step.append(sum(written.values()) - before)
    writer.close()
    assert len(read_metric_rows("gs://bucket/run")) == 200
  assert per_step[0] > 0 and max(per_step) - min(per_step) <= 2  # the step number's digits
  assert not any(p.endswith("metrics.jsonl") for p in written)
  assert len(flushes) == 200  # one per sync, none besides


class _NullWriter:
  def add_scalar(self, *args):
    pass

  def flush(self):
    pass

  def close(self):
    pass
