"""Metric output on process 0: JSONL, TensorBoard event files and a console progress line; the
training metrics read one step late, with throughput, MFU and the non-finite-loss stop."""

import json
import math
import time

import jax
import numpy as np

from unimo_jax.paths import as_path, is_remote
from unimo_jax.errors import NonFiniteLoss


REMOTE_PARTS = "metrics"  # <workdir>/metrics/part-000000.jsonl, ... on a remote workdir


class MetricWriter:
  """Writes scalars to <workdir>/metrics.jsonl and TensorBoard events (process 0 only).

  A remote (gs://) object cannot be appended to, and rewriting one file whole at every write
  costs more the longer the run. There the rows are buffered and written every `sync_seconds`
  (and at close) as one new object, <workdir>/metrics/part-<n>.jsonl, numbered on from the parts
  already there (a resumed run continues them), and the TensorBoard event file is flushed on the
  same interval, not at every write: the bytes sent per log step stay the same however long the
  run. read_metric_rows() reads either layout back."""

  def __init__(self, workdir, enabled: bool | None = None, sync_seconds: float = 60.0):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._jsonl = None
    self._tb = None
    self._pending = None
    self.sync_seconds = float(sync_seconds)
    if self.enabled:
      workdir = as_path(workdir)
      workdir.mkdir(parents=True, exist_ok=True)
      self._path = workdir / "metrics.jsonl"
      from tensorboardX import SummaryWriter  # gs:// needs google-cloud-storage
      if is_remote(workdir):
        self._parts = workdir / REMOTE_PARTS
        self._parts.mkdir(parents=True, exist_ok=True)
        self._next_part = 1 + max((_part_number(p) for p in self._parts.glob("part-*.jsonl")),
                                  default=-1)
        self._pending, self._synced = [], time.monotonic()
        self._tb = SummaryWriter(str(workdir / "tensorboard"), flush_secs=max(1, int(sync_seconds)))
      else:
        self._jsonl = open(self._path, "a", encoding="utf-8")
        self._tb = SummaryWriter(str(workdir / "tensorboard"))

  def write(self, step: int, scalars: dict, prefix: str = "train") -> None:
    if not self.enabled:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    line = json.dumps({"step": int(step), "split": prefix, **scalars})
    for key, value in scalars.items():
      self._tb.add_scalar(f"{prefix}/{key}", value, int(step))
    if self._pending is not None:
      self._pending.append(line)
      if time.monotonic() - self._synced >= self.sync_seconds:
        self.sync()
    else:
      self._jsonl.write(line + "\n")
      self._jsonl.flush()
      self._tb.flush()

  def sync(self) -> None:
    """Remote workdir: the buffered rows as one new part object, and the event file flushed."""
    if not self.enabled or self._pending is None:
      return
    if self._pending:
      part = self._parts / f"part-{self._next_part:06d}.jsonl"
      part.write_text("\n".join(self._pending) + "\n")
      self._next_part += 1
      self._pending = []
      self._tb.flush()
    self._synced = time.monotonic()

  def close(self) -> None:
    if self.enabled:
      self.sync()
      if self._jsonl is not None:
        self._jsonl.close()
      self._tb.close()


def _part_number(path) -> int:
  stem = path.name[len("part-"):-len(".jsonl")]
  return int(stem) if stem.isdigit() else -1


def complete_lines(text: str) -> list:
  """The newline-terminated lines of a JSON-lines file: a last line without its newline is a row
  the writer has not finished (a run writing while this reads) and is left out."""
  return text.split("\n")[:-1]


def read_metric_rows(workdir) -> list:
  """Every metric row of a workdir, oldest first: metrics.jsonl, then (remote workdirs) the
  parts under metrics/ in their order. Safe to call while a run writes: only complete rows."""
  workdir = as_path(workdir)
  lines = []
  if (workdir / "metrics.jsonl").exists():
    lines += complete_lines((workdir / "metrics.jsonl").read_text())
  parts = workdir / REMOTE_PARTS
  if parts.exists():
    for part in sorted(parts.glob("part-*.jsonl"), key=_part_number):
      lines += complete_lines(part.read_text())
  return [json.loads(line) for line in lines if line.strip()]


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


def check_finite(step: int, scalars: dict) -> None:
  """Raises NonFiniteLoss naming the step and every non-finite metric."""
  loss = float(scalars["total_loss"])
  if not math.isfinite(loss):
    bad = sorted(k for k, v in scalars.items() if not math.isfinite(float(v)))
    raise NonFiniteLoss(f"step {step}: non-finite loss {loss} (non-finite metrics: {bad}); "
                        "stopping; the last checkpoint is the last good state")


def batch_tokens(batch) -> int:
  """Real text tokens plus real regions in a host batch, nested dicts included (for tokens/s)."""
  total = 0
  def visit(node):
    nonlocal total
    if "input_ids" in node:
      total += int((np.asarray(node["input_ids"]) > 1).sum())
    if "region_mask" in node:
      total += int(np.asarray(node["region_mask"]).sum())
    for value in node.values():
      if isinstance(value, dict):
        visit(value)
  visit(batch)
  return total


def measured_peak_flops(size=1024, repeats=5) -> float:
  """FLOP/s of a float32 matmul on one device: the MFU denominator when none is configured."""
  x = jax.numpy.ones((size, size), jax.numpy.float32)
  f = jax.jit(lambda a: a @ a)
  f(x).block_until_ready()
  start = time.perf_counter()
  for _ in range(repeats):
    f(x).block_until_ready()
  return 2 * size ** 3 * repeats / (time.perf_counter() - start)


class DelayedMetrics:
  """Training metrics read one step late (MaxText's buffer_and_write_metrics).

  push(step, metrics, ...) holds a step's device metrics; flush() reads the held ones, stops the
  run on a non-finite loss, and on log steps adds throughput and MFU and writes them. The loop
  flushes step N-1 after dispatching step N, so the host never waits for the step it just
  launched, and flushes at once before a checkpoint, so a bad step is never saved."""

  def __init__(self, writer: MetricWriter, progress: Progress, *, log_every: int,
               total_steps: int, examples_per_step: int, step_flops: float, peak_flops: float):
    self.writer, self.progress = writer, progress
    self.log_every, self.total_steps = max(int(log_every), 1), int(total_steps)
    self.examples_per_step = examples_per_step
    self.step_flops, self.peak_flops = step_flops, peak_flops
    self._held = None

  def push(self, step: int, metrics, seconds: float, input_wait: float, tokens: int) -> None:
    self.flush()
    self._held = (step, metrics, seconds, input_wait, tokens)

  def flush(self) -> None:
    if self._held is None:
      return
    step, metrics, seconds, wait, tokens = self._held
    self._held = None
    scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
    check_finite(step, scalars)
    if step % self.log_every == 0 or step == self.total_steps:
      scalars.update(examples_per_second=self.examples_per_step / seconds,
                     tokens_per_second=tokens / seconds,
                     mfu=self.step_flops / seconds / (self.peak_flops * jax.device_count()),
                     input_wait_fraction=wait / seconds, step_seconds=seconds)
      self.writer.write(step, scalars)
      self.progress.report(step, scalars)
