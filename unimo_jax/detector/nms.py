"""Greedy non-maximum suppression with static shapes, for jit on any backend.

Greedy NMS keeps the highest-scoring box, drops every box that overlaps it by IoU >= threshold
(lib/nms/cpu_nms.pyx suppresses at >=; the original runs the CPU kernel, USE_GPU_NMS False),
and repeats on what is left. Here each loop step takes the best remaining box with argmax, so
`max_output` steps give the first `max_output` kept boxes in keep order, without a sort and
without a host round trip. Equal scores go to the lower index (a stable descending order); the
original's numpy argsort leaves their order unspecified.
"""

import jax
import jax.numpy as jnp

from unimo_jax.detector.boxes import iou_matrix


def greedy_nms(boxes, scores, valid, threshold: float, max_output: int):
  """(keep [max_output] int32 indices in keep order, count) of greedy NMS over [N, 4] boxes with
  [N] scores; only `valid` [N] boxes take part. Slots past `count` hold index 0."""
  overlaps = iou_matrix(boxes)  # [N, N]
  neg_inf = jnp.float32(-jnp.inf)

  def step(i, carry):
    remaining, keep, count = carry
    masked = jnp.where(remaining, scores, neg_inf)
    best = jnp.argmax(masked)
    found = remaining[best]
    keep = keep.at[i].set(jnp.where(found, best, 0))
    suppressed = overlaps[best] >= threshold
    remaining = remaining & ~(suppressed & found)
    remaining = remaining.at[best].set(False)
    return remaining, keep, count + found.astype(jnp.int32)

  keep = jnp.zeros([max_output], jnp.int32)
  _, keep, count = jax.lax.fori_loop(0, max_output, step, (valid, keep, jnp.int32(0)))
  return keep, count


def kept_mask_per_class(overlaps, scores, valid, threshold: float):
  """[C, N] bool: whether box n survives greedy NMS among the N boxes scored by class c.

  overlaps: [N, N] IoU of the boxes (shared by every class); scores: [C, N]; valid: [N]. All
  classes run together, one kept box per class per loop step, N steps at most."""
  num_boxes = scores.shape[1]
  neg_inf = jnp.float32(-jnp.inf)

  def step(_, carry):
    remaining, kept = carry  # [C, N] each
    masked = jnp.where(remaining, scores, neg_inf)
    best = jnp.argmax(masked, axis=1)  # [C]
    found = jnp.take_along_axis(remaining, best[:, None], axis=1)[:, 0]  # [C]
    picked = jax.nn.one_hot(best, num_boxes, dtype=jnp.bool_) & found[:, None]
    suppressed = (overlaps[best] >= threshold) & found[:, None]  # [C, N]
    return remaining & ~suppressed & ~picked, kept | picked

  remaining = jnp.broadcast_to(valid[None], scores.shape)
  _, kept = jax.lax.fori_loop(0, num_boxes, step, (remaining, jnp.zeros_like(remaining)))
  return kept
