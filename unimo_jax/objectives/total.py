"""The pretraining loss: a weighted sum of objective terms, every term reported."""

import jax.numpy as jnp


def weighted_total(terms: dict, weights) -> tuple:
  """terms: name -> (loss, metrics). weights: mapping name -> float (every term needs one).

  Returns (total, metrics) with metrics flattened as '<name>/<metric>' plus 'total_loss'.
  A term with weight 0 is reported but does not enter the total.
  """
  missing = sorted(set(terms) - set(weights))
  if missing:
    raise ValueError(f"loss weights: expected a weight for every term {sorted(terms)}, "
                     f"missing {missing}")
  total = jnp.float32(0.0)
  metrics = {}
  for name, (loss, term_metrics) in terms.items():
    weight = float(weights[name])
    if weight:
      total = total + weight * loss
    for key, value in term_metrics.items():
      metrics[f"{name}/{key}"] = value
  metrics["total_loss"] = total
  return total, metrics
