"""The Caffe anchor set (lib/rpn/generate_anchors.py) and its grid over a feature map
(lib/rpn/proposal_layer.py: shifts of feat_stride * (x, y), anchors fastest)."""

import jax.numpy as jnp
import numpy as np


def _box_of(width, height, cx, cy):
  return np.array([cx - 0.5 * (width - 1), cy - 0.5 * (height - 1),
                   cx + 0.5 * (width - 1), cy + 0.5 * (height - 1)])


def base_anchors(stride=16, ratios=(0.5, 1.0, 2.0), scales=(4, 8, 16, 32)) -> np.ndarray:
  """[ratios * scales, 4] float32 (x1, y1, x2, y2), ratio-major, around the base window
  [0, 0, stride-1, stride-1]: for ratio r, width round(sqrt(area / r)) and height round(width * r)
  (numpy's half-to-even round), both then multiplied by each scale."""
  size = float(stride)
  cx = cy = 0.5 * (size - 1)
  anchors = []
  for ratio in ratios:
    width = np.round(np.sqrt(size * size / ratio))
    height = np.round(width * ratio)
    for scale in scales:
      anchors.append(_box_of(width * scale, height * scale, cx, cy))
  return np.asarray(anchors, np.float32)


def grid_anchors(base, height: int, width: int, stride: int = 16):
  """[height * width * A, 4]: every base anchor [A, 4] shifted to every cell of a height x width
  map, ordered (y, x, anchor) as the RPN's outputs are flattened. No half-stride offset."""
  ys, xs = np.meshgrid(np.arange(height) * stride, np.arange(width) * stride, indexing="ij")
  shifts = np.stack([xs, ys, xs, ys], axis=-1).reshape(-1, 1, 4).astype(np.float32)
  return (jnp.asarray(shifts) + jnp.asarray(base, jnp.float32)[None]).reshape(-1, 4)
