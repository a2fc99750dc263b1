"""The pretraining streams' transforms, a host batch at a time.

`streams.Transforms` turns one record into one example; this builds the same examples for a
list of records, with one Generator per example, and returns the stacked batch. What is drawn
at random (span masking, seq2seq spans, region anchors, extra texts and images, pixel crops) is
still drawn per example, in the per-example order, from that example's Generator; what is plain
array work is done once for the batch: region features, locations and soft labels are written
into one [batch, regions, ...] array each, the IoU of every anchor with its image's regions in
one computation, masked features in one `where`, and an image's fields are one array shared by
every term that reads them (not one copy per term). So for the same records and Generators
the batch equals the per-example examples stacked (tests/test_batch_transforms.py).
"""

import numpy as np

from unimo_jax.data.pipeline import examples
from unimo_jax.data.pipeline.masking import region_anchors

IMAGE_KEYS = ("region_features", "region_locations", "region_mask")


def stack_examples(rows):
  """[{key: array}] -> {key: stacked array}."""
  return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def prefixed(prefix, fields):
  return {f"{prefix}/{k}": v for k, v in fields.items()}


def region_batch(records, cfg, feature_dim, num_classes) -> dict:
  """examples.region_fields of every record, stacked: [batch, max_regions, ...] arrays."""
  b, n = len(records), cfg.max_regions
  feats = [np.asarray(r["region_features"])[:n] for r in records]
  probs = [r.get("class_probs") for r in records]
  probs = [np.zeros((len(f), num_classes), np.float32) if p is None else np.asarray(p)[:n]
           for f, p in zip(feats, probs)]
  features = np.zeros((b, n, feature_dim), np.result_type(*feats))
  soft = np.zeros((b, n, num_classes), np.result_type(*probs))
  boxes = np.zeros((b, n, 4), np.float32)
  valid = np.zeros((b, n), bool)
  area_scale = np.ones(b, np.float32)
  wh = np.ones((b, 4), np.float32)
  for i, (record, f, p) in enumerate(zip(records, feats, probs)):
    k = len(f)
    features[i, :k] = f.reshape(k, feature_dim)
    soft[i, :k] = p.reshape(k, num_classes)
    boxes[i, :k] = np.asarray(record["boxes"], np.float32)[:n]
    valid[i, :k] = True
    w, h = float(record["image_w"]), float(record["image_h"])
    wh[i] = (w, h, w, h)
    area_scale[i] = w * h
  area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]) / area_scale[:, None]
  locations = np.concatenate([boxes / wh[:, None, :], area[..., None]], -1)
  # padding rows have zero boxes, so their locations are zero as region_fields pads them
  return {"region_features": features, "region_locations": locations,
          "region_mask": valid, "_boxes": boxes, "_soft_labels": soft}


def anchor_iou(boxes, anchors):
  """(image index [K], IoU [K, N]) of each anchor region (anchors [batch, N] bool) with every
  region of its image (boxes [batch, N, 4]): the anchors' rows of masking.iou_matrix, computed
  with the same float64 operations, for the ~15 % of rows masking reads."""
  image, row = np.nonzero(anchors)
  boxes = np.asarray(boxes, np.float64)
  a, others = boxes[image, row], boxes[image]  # [K, 4], [K, N, 4]
  x1 = np.maximum(a[:, None, 0], others[:, :, 0])
  y1 = np.maximum(a[:, None, 1], others[:, :, 1])
  x2 = np.minimum(a[:, None, 2], others[:, :, 2])
  y2 = np.minimum(a[:, None, 3], others[:, :, 3])
  inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
  area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
  union = area(a)[:, None] + area(others) - inter
  return image, np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def mrm_batch(regions, anchors, cfg) -> dict:
  """examples.mrm_fields for a batch, given each example's anchors ([batch, N] bool, drawn by
  masking.region_anchors): the anchors and every real region overlapping one above
  cfg.overlap_ratio are masked."""
  valid = regions["region_mask"]
  mask = anchors.copy()
  image, iou = anchor_iou(regions["_boxes"], anchors)
  if len(image):  # OR each image's anchor rows together (np.nonzero lists them image by image)
    starts = np.flatnonzero(np.r_[True, image[1:] != image[:-1]])
    mask[image[starts]] |= np.logical_or.reduceat(iou > cfg.overlap_ratio, starts, axis=0) & \
        valid[image[starts]]
  features = regions["region_features"]
  return {
      "region_features": np.where(mask[..., None], 0, features).astype(features.dtype,
                                                                        copy=False),
      "region_locations": regions["region_locations"],
      "region_mask": valid,
      "mrm_mask": mask,
      "region_target_features": features,
      "region_soft_labels": regions["_soft_labels"],
  }


def draw_anchors(regions, cfg, rngs):
  """[batch, N] bool: each example's region anchors from its Generator."""
  return np.stack([region_anchors(valid, rng, ratio=cfg.region_mask_ratio)
                   for valid, rng in zip(regions["region_mask"], rngs)])


class BatchTransforms:
  """The per-example `Transforms` (streams.py) of each stream, a batch at a time. Picklable."""

  def __init__(self, transforms):
    self.one = transforms
    self.cfg = transforms.cfg

  def _regions(self, records):
    inputs = self.one.inputs
    return region_batch(records, self.cfg, inputs.feature_dim, inputs.num_classes)

  def text(self, records, rngs) -> dict:
    return stack_examples([self.one.text(r, g) for r, g in zip(records, rngs)])

  def image(self, records, rngs) -> dict:
    regions = self._regions(records)
    return prefixed("image_mrm", mrm_batch(regions, draw_anchors(regions, self.cfg, rngs),
                                           self.cfg))

  def pair(self, records, rngs) -> dict:
    one, cfg, special = self.one, self.cfg, self.one.special
    regions = None
    if one.pixels:  # a random crop of each image file (training's augmentation), drawn first
      image = stack_examples([one.inputs.image(r, rng=g) for r, g in zip(records, rngs)])
    else:
      regions = self._regions(records)
      image = {k: regions[k] for k in IMAGE_KEYS}
    captions = [r["caption_ids"] for r in records]
    mlm = stack_examples([examples.mlm_fields(c, cfg.max_caption_length, cfg, special,
                                              one.vocab_size, g) for c, g in zip(captions, rngs)])
    text = np.stack([one.inputs.text(c) for c in captions])
    out = prefixed("pair_mlm", dict(image, **mlm))
    if regions is not None:
      out.update(prefixed("pair_mrm", dict(
          mrm_batch(regions, draw_anchors(regions, cfg, rngs), cfg), input_ids=text)))
    caption = stack_examples([examples.caption_fields(c, cfg, special) for c in captions])
    out.update(prefixed("pair_caption", dict(image, **caption)))
    out.update(prefixed("cmcl/image", image))
    out["cmcl/text/input_ids"] = text
    if cfg.cmcl_extra_positives + cfg.cmcl_hard_negatives > 0:
      extra = stack_examples([one.extra_texts(r, g) for r, g in zip(records, rngs)])
      out.update(extra)
    if cfg.cmcl_extra_images > 0:
      out.update(self._extra_images(records, image, rngs))
    return out

  def _extra_images(self, records, image, rngs) -> dict:
    """[batch, cmcl_extra_images, ...] retrieved images, stacked as the per-example ones."""
    count, one = self.cfg.cmcl_extra_images, self.one
    chosen = [one.chosen_extra_images(r, g) for r, g in zip(records, rngs)]
    looked_up = [one.image_lookup[int(i)] for refs in chosen for i in refs]
    if one.pixels:
      blocks = [one.inputs.image(r) for r in looked_up]
      rows = stack_examples(blocks) if blocks else None
    else:
      rows = ({k: v for k, v in self._regions(looked_up).items() if k in IMAGE_KEYS}
              if looked_up else None)
    out = {k: np.zeros((len(records), count) + v.shape[1:], v.dtype) for k, v in image.items()}
    valid = np.zeros((len(records), count), bool)
    row = 0
    for i, refs in enumerate(chosen):
      for slot in range(len(refs)):
        for k in out:
          out[k][i, slot] = rows[k][row]
        valid[i, slot] = True
        row += 1
    out = prefixed("cmcl/extra_image", out)
    out["cmcl/extra_image_valid"] = valid
    return out
