"""Boxes (x1, y1, x2, y2) in pixels with the Caffe convention that a box covers x1..x2 inclusive,
so its width is x2 - x1 + 1 (lib/fast_rcnn/bbox_transform.py, lib/nms/cpu_nms.pyx)."""

import jax.numpy as jnp


def decode(boxes, deltas):
  """[..., 4] boxes moved by [..., 4] deltas (dx, dy, dw, dh), bbox_transform_inv: centres shift
  by d * size, sizes scale by exp(d); no clamp on dw / dh (the original has none at test time)."""
  widths = boxes[..., 2] - boxes[..., 0] + 1.0
  heights = boxes[..., 3] - boxes[..., 1] + 1.0
  cx = boxes[..., 0] + 0.5 * widths
  cy = boxes[..., 1] + 0.5 * heights
  px = deltas[..., 0] * widths + cx
  py = deltas[..., 1] * heights + cy
  pw = jnp.exp(deltas[..., 2]) * widths
  ph = jnp.exp(deltas[..., 3]) * heights
  return jnp.stack([px - 0.5 * pw, py - 0.5 * ph, px + 0.5 * pw, py + 0.5 * ph], axis=-1)


def clip(boxes, height, width):
  """Boxes clipped to the image: x in [0, width - 1], y in [0, height - 1] (clip_boxes)."""
  x_max, y_max = width - 1.0, height - 1.0
  return jnp.stack([jnp.clip(boxes[..., 0], 0.0, x_max), jnp.clip(boxes[..., 1], 0.0, y_max),
                    jnp.clip(boxes[..., 2], 0.0, x_max), jnp.clip(boxes[..., 3], 0.0, y_max)],
                   axis=-1)


def iou_matrix(boxes):
  """[N, N] intersection over union of [N, 4] boxes, areas and overlaps with "+1" widths."""
  x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
  areas = (x2 - x1 + 1.0) * (y2 - y1 + 1.0)
  w = jnp.maximum(0.0, jnp.minimum(x2[:, None], x2[None]) - jnp.maximum(x1[:, None], x1[None])
                  + 1.0)
  h = jnp.maximum(0.0, jnp.minimum(y2[:, None], y2[None]) - jnp.maximum(y1[:, None], y1[None])
                  + 1.0)
  inter = w * h
  return inter / (areas[:, None] + areas[None] - inter)
