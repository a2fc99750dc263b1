"""UNIMO's optimizer: AdamW (b2 0.98, eps 1e-6), decoupled weight decay that skips LayerNorm
parameters and biases, global-norm clipping at 1.0, linear warmup then linear decay to 0 (or
piecewise-constant drops)."""

import jax
import optax


SCHEDULES = ("linear", "piecewise")


def learning_rate_schedule(config):
  """optimizer.schedule 'linear' (UNIMO's linear_warmup_decay): linear warmup over warmup_steps
  to `learning_rate`, then linear decay to 0 at total steps. 'piecewise' (its
  scale_by_epoch_decay, retrieval): `learning_rate`, times decay_factor after every step of
  decay_boundaries."""
  o = config.optimizer
  schedule = o.get("schedule", "linear")
  if schedule not in SCHEDULES:
    raise ValueError(f"optimizer.schedule: expected one of {SCHEDULES}, found {schedule!r}")
  if schedule == "piecewise":
    boundaries = [int(b) for b in o.get("decay_boundaries", ())]
    return optax.piecewise_constant_schedule(
        float(o.learning_rate), {b: float(o.decay_factor) for b in boundaries})
  warmup = int(o.warmup_steps)
  total = max(int(config.steps), warmup + 1)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, o.learning_rate, max(warmup, 1)),
       optax.linear_schedule(o.learning_rate, 0.0, total - warmup)], [warmup])


def decay_mask(params):
  """True for weights that take weight decay: kernels and embedding tables, not LayerNorm
  scales/biases, dense biases or the CMCL temperature (UNIMO's `layer_norm` / `_bias` rule)."""
  def takes_decay(path, leaf):
    names = [getattr(p, "key", str(p)) for p in path]
    leafname = names[-1]
    if "layer_norm" in "/".join(names) or leafname in ("bias", "scale", "cmcl_temperature"):
      return False
    return leafname.endswith("bias") is False and leaf.ndim >= 2
  return jax.tree_util.tree_map_with_path(takes_decay, params)


def make_optimizer(config):
  o = config.optimizer
  return optax.chain(
      optax.clip_by_global_norm(o.grad_clip_norm),
      optax.adamw(learning_rate_schedule(config), b1=o.b1, b2=o.b2, eps=o.eps,
                  weight_decay=o.weight_decay, mask=decay_mask),
  )
