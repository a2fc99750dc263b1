"""Metric output on process 0: JSONL, TensorBoard event files and a console progress line; the
training metrics read one step late, with throughput, MFU and the non-finite-loss stop."""

import json
import math
import time

import jax
import numpy as np

from unimo_jax.paths import as_path, is_remote
from unimo_jax.train.workdir import NonFiniteLoss


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
