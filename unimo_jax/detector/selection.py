"""Which regions an image keeps: bottom-up-attention's tools/generate_tsv.py rule.

For every foreground class c, greedy NMS (IoU >= 0.3 suppresses, "+1" widths) over all regions
scored by their class-c probability; a region's confidence is its highest class probability among
the classes whose NMS keeps it. Regions with confidence >= 0.2 are kept in region order; if fewer
than min_boxes (10) pass, the min_boxes most confident are taken instead, and if more than
max_boxes (100) pass, the max_boxes most confident; both in descending confidence. The NMS runs on
the regions in original-image pixels (rois / scale), as the original does.
"""

import jax.numpy as jnp

from unimo_jax.detector.boxes import iou_matrix
from unimo_jax.detector.nms import kept_mask_per_class


def region_confidence(cls_prob, boxes, valid, nms_threshold: float):
  """[R] confidence of each region (-1 for invalid ones) from [R, C] class probabilities (index 0
  background), [R, 4] boxes and [R] validity."""
  scores = cls_prob[:, 1:].T  # [C - 1, R]
  kept = kept_mask_per_class(iou_matrix(boxes), scores, valid, nms_threshold)
  confidence = jnp.max(jnp.where(kept, scores, 0.0), axis=0)
  return jnp.where(valid, confidence, -1.0)


def select(confidence, valid, conf_thresh: float, min_boxes: int, max_boxes: int):
  """(index [max_boxes] int32, count) of the kept regions in the order they are written; slots
  past count are padding. Ties in confidence go to the lower region index."""
  passing = valid & (confidence >= conf_thresh)
  num_passing = jnp.sum(passing)
  num_valid = jnp.sum(valid)
  size = confidence.shape[0]
  take = min(max_boxes, size)
  by_region = jnp.argsort(~passing, stable=True)[:take]  # passing regions first, region order
  by_confidence = jnp.argsort(-confidence, stable=True)[:take]
  in_range = (num_passing >= min_boxes) & (num_passing <= max_boxes)
  index = jnp.where(in_range, by_region, by_confidence).astype(jnp.int32)
  count = jnp.minimum(jnp.clip(num_passing, min_boxes, max_boxes), num_valid)
  if take < max_boxes:
    index = jnp.pad(index, (0, max_boxes - take))
  return index, count.astype(jnp.int32)
