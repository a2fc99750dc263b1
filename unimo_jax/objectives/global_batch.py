"""A loss term over the global batch from the per-device terms, for code inside a jax.shard_map
over the batch axes (train/data_parallel.py).

The language and region objectives report means over their own count of predictions (MLM
tokens, masked regions) and the count itself. A device's mean times its count is its sum, so

  global mean = psum(count_d * mean_d) / max(psum(count_d), 1)

is the mean the objective would compute over the global batch (a device with no predictions
reports mean 0 and adds nothing). The result is the same on every device; differentiated there,
it gives that device's share of the global gradient (count_d / global count x its own mean's
gradient), which the step then sums over the devices once.
"""

import jax
import jax.numpy as jnp


def global_means(metrics: dict, count_key: str, batch_axes) -> tuple:
  """(loss, metrics) of the global batch from one device's metrics (with 'loss'): every metric
  but `count_key` is a mean over that count; the count becomes the global count."""
  if count_key not in metrics or "loss" not in metrics:
    raise ValueError(f"global_means: expected metrics with 'loss' and the count {count_key!r}, "
                     f"found {sorted(metrics)}")
  count = metrics[count_key]
  sums = {k: v * count for k, v in metrics.items() if k != count_key}
  sums[count_key] = count
  sums = jax.lax.psum(sums, batch_axes)
  total = sums.pop(count_key)
  out = {k: v / jnp.maximum(total, 1.0) for k, v in sums.items()}
  out[count_key] = total
  return out["loss"], out
