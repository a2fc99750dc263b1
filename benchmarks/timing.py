"""Timing shared by the benchmark scripts."""

import statistics
import time

import jax


def median_seconds(fn, repeats: int) -> float:
  """Median wall time of fn() over `repeats` runs, after one untimed (compile / warm-up) run.
  Results are waited for, so asynchronous dispatch does not hide device time."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)
