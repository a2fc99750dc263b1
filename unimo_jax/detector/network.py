"""The whole detector for a batch of padded images of one bucket: C4 trunk -> RPN proposals ->
RoIPool -> res5 -> class, box and attribute heads -> the regions generate_tsv.py keeps.

Proposals follow lib/rpn/proposal_layer.py at test time: decode every anchor, clip to the
resized image, drop boxes under rpn_min_size * scale on either side (w + 1 >= min), take the
pre_nms_top_n best by foreground probability, greedy NMS at 0.7, keep post_nms_top_n. An image
with fewer proposals marks the rest invalid (num_rois).
"""

import functools

import jax
import jax.numpy as jnp

from unimo_jax.detector import backbone, boxes as box_ops, selection
from unimo_jax.detector.anchors import grid_anchors
from unimo_jax.detector.config import DetectorConfig
from unimo_jax.detector.nms import greedy_nms
from unimo_jax.detector.roi_pool import roi_pool


def dense(x, p):
  return x @ p["kernel"].astype(x.dtype) + p["bias"].astype(x.dtype)


def proposals(config: DetectorConfig, anchors, foreground, deltas, in_map, image_hw, scale):
  """One image: [N] foreground probs and [N, 4] deltas over the (y, x, anchor) grid of a padded
  map, in_map [N] marking anchors of valid cells -> (rois [post_nms_top_n, 4] in resized
  pixels, count)."""
  height, width = image_hw[0].astype(jnp.float32), image_hw[1].astype(jnp.float32)
  candidates = box_ops.clip(box_ops.decode(anchors, deltas), height, width)
  min_size = config.rpn_min_size * scale
  big_enough = ((candidates[:, 2] - candidates[:, 0] + 1.0 >= min_size)
                & (candidates[:, 3] - candidates[:, 1] + 1.0 >= min_size))
  scores = jnp.where(in_map & big_enough, foreground, -jnp.inf)
  top = min(config.pre_nms_top_n, scores.shape[0])
  top_scores, top_index = jax.lax.top_k(scores, top)
  top_boxes = candidates[top_index]
  keep, count = greedy_nms(top_boxes, top_scores, jnp.isfinite(top_scores), config.rpn_nms,
                           config.post_nms_top_n)
  return top_boxes[keep], count


def _cell_validity(valid_hw, height: int, width: int, num_anchors: int):
  """[B, height * width * A] bool: the anchor's cell lies inside the valid feature map."""
  mask = backbone.valid_mask(valid_hw, height, width)[..., 0]  # [B, h, w]
  return jnp.repeat(mask.reshape(mask.shape[0], -1), num_anchors, axis=1)


def box_heads(params, features):
  """[R, D] pooled features -> (cls_prob [R, C], box deltas [R, C, 4], attr_prob [R, A]).
  The attribute head reads the feature with the embedding of the argmax class, background
  included (the prototxt's ArgMax over cls_score)."""
  cls_score = dense(features, params["cls_score"])
  bbox = dense(features, params["bbox_pred"]).reshape(features.shape[0], -1, 4)
  embedding = params["cls_embedding"][jnp.argmax(cls_score, axis=-1)].astype(features.dtype)
  hidden = jax.nn.relu(dense(jnp.concatenate([features, embedding], axis=-1), params["fc_attr"]))
  attr_score = dense(hidden, params["attr_score"])
  return (jax.nn.softmax(cls_score.astype(jnp.float32), axis=-1), bbox,
          jax.nn.softmax(attr_score.astype(jnp.float32), axis=-1))


def detect(params, images, image_hw, scales, *, config: DetectorConfig, everything=False):
  """images [B, H, W, 3] (mean-subtracted BGR, zero past each image), image_hw [B, 2] int32
  resized sizes, scales [B] resize factors -> a dict of the kept regions per image:
    features [B, max_boxes, D], boxes [B, max_boxes, 4] (original pixels), class_probs
    [B, max_boxes, C], attr_probs [B, max_boxes, A], num_boxes [B];
  with everything=True also every stage: c4, rois, num_rois, roi_features, cls_prob, attr_prob,
  box_deltas, confidence."""
  c4 = backbone.c4_features(params["trunk"], images, image_hw)  # [B, h, w, C4]
  c4_hw = backbone.trunk_valid_sizes(image_hw)[3]
  foreground, deltas = backbone.rpn_head(params["rpn"], c4, c4_hw)
  batch, height, width, _ = c4.shape
  anchors = grid_anchors(params["anchors"], height, width, config.feature_stride)
  in_map = _cell_validity(c4_hw, height, width, config.num_anchors)
  rois, num_rois = jax.vmap(
      lambda f, d, m, hw, s: proposals(config, anchors, f, d, m, hw, s))(
          foreground, deltas, in_map, image_hw, scales)
  roi_valid = jnp.arange(config.post_nms_top_n)[None] < num_rois[:, None]  # [B, R]
  pooled = jax.vmap(functools.partial(roi_pool, pooled=config.pooled_size,
                                      spatial_scale=1.0 / config.feature_stride))(
      c4, rois, c4_hw)  # [B, R, P, P, C4]
  num = config.post_nms_top_n
  roi_features = backbone.res5_head(params["res5"], pooled.reshape((batch * num,) +
                                                                    pooled.shape[2:]))
  cls_prob, box_deltas, attr_prob = box_heads(params, roi_features)
  roi_features = roi_features.reshape(batch, num, -1)
  cls_prob, attr_prob = cls_prob.reshape(batch, num, -1), attr_prob.reshape(batch, num, -1)
  original = rois / scales[:, None, None]  # generate_tsv.py: cls_boxes = rois / im_scale
  confidence = jax.vmap(lambda p, b, v: selection.region_confidence(p, b, v, config.class_nms))(
      cls_prob, original, roi_valid)
  index, count = jax.vmap(lambda c, v: selection.select(
      c, v, config.conf_thresh, config.min_boxes, config.max_boxes))(confidence, roi_valid)
  take = lambda x: jnp.take_along_axis(x, index.reshape(batch, -1, *([1] * (x.ndim - 2))), 1)
  out = {"features": take(roi_features), "boxes": take(original), "class_probs": take(cls_prob),
         "attr_probs": take(attr_prob), "num_boxes": count}
  if everything:
    out.update(c4=c4, rois=rois, num_rois=num_rois, roi_features=roi_features, cls_prob=cls_prob,
               attr_prob=attr_prob, box_deltas=box_deltas.reshape(batch, num, -1, 4),
               confidence=confidence)
  return out
