"""Metric output on process 0: JSONL, TensorBoard event files and a console progress line."""

import json
import math
import time

import jax

from unimo_jax.paths import as_path, is_remote


class MetricWriter:
  """Writes scalars to <workdir>/metrics.jsonl and TensorBoard events (process 0 only).

  A remote (gs://) workdir cannot be appended to: its metrics.jsonl is rewritten whole on each
  write (the rows of earlier runs in it are read first, so nothing is lost)."""

  def __init__(self, workdir, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._jsonl = None
    self._tb = None
    self._rows = None
    if self.enabled:
      workdir = as_path(workdir)
      workdir.mkdir(parents=True, exist_ok=True)
      self._path = workdir / "metrics.jsonl"
      if is_remote(workdir):
        self._rows = self._path.read_text().splitlines() if self._path.exists() else []
      else:
        self._jsonl = open(self._path, "a", encoding="utf-8")
      from tensorboardX import SummaryWriter  # gs:// needs google-cloud-storage
      self._tb = SummaryWriter(str(workdir / "tensorboard"))

  def write(self, step: int, scalars: dict, prefix: str = "train") -> None:
    if not self.enabled:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    line = json.dumps({"step": int(step), "split": prefix, **scalars})
    if self._rows is not None:
      self._rows.append(line)
      self._path.write_text("\n".join(self._rows) + "\n")
    else:
      self._jsonl.write(line + "\n")
      self._jsonl.flush()
    for key, value in scalars.items():
      self._tb.add_scalar(f"{prefix}/{key}", value, int(step))
    self._tb.flush()

  def close(self) -> None:
    if self.enabled:
      if self._jsonl is not None:
        self._jsonl.close()
      self._tb.close()


class Progress:
  """Console line with step, loss, throughput and ETA."""

  def __init__(self, total_steps: int, start_step: int, enabled: bool | None = None):
    self.total, self.start = total_steps, start_step
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.began = time.perf_counter()

  def line(self, step: int, scalars: dict) -> str:
    elapsed = time.perf_counter() - self.began
    done = max(step - self.start, 1)
    eta = elapsed / done * (self.total - step)
    return (f"step {step}/{self.total} | loss {scalars.get('total_loss', math.nan):.4f} | "
            f"lr {scalars.get('learning_rate', math.nan):.2e} | "
            f"{scalars.get('examples_per_second', math.nan):.0f} ex/s | "
            f"ETA {int(eta // 60)}m{int(eta % 60):02d}s")

  def report(self, step: int, scalars: dict) -> None:
    if self.enabled:
      print(self.line(step, scalars), flush=True)
