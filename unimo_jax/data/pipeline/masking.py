"""Host-side, seeded masking for UNIMO's objectives (numpy; every function takes a Generator).

  span_mask         SpanBERT-style: spans with geometric lengths until `ratio` of the maskable
                    tokens are chosen; each chosen token becomes [MASK] 80 %, a random token 10 %,
                    itself 10 %.
  seq2seq_split     spans with uniform lengths until they cover `ratio` of the text; the spans,
                    concatenated in order, are the target and the rest is the source.
  region_mask       each real region is an anchor with probability `ratio` (at least one); every
                    region whose IoU with an anchor exceeds `overlap_ratio` is masked too.
"""

import numpy as np


def _span_starts_and_lengths(n, budget, rng, draw_length):
  """Non-overlapping spans over [0, n) covering at least `budget` positions (or all of them)."""
  chosen = np.zeros(n, bool)
  attempts = 0
  while chosen.sum() < budget and attempts < 100 * max(n, 1):
    attempts += 1
    length = int(min(draw_length(), n))
    start = int(rng.integers(0, n - length + 1))
    if chosen[start:start + length].any():
      continue
    chosen[start:start + length] = True
  return chosen


def span_mask(ids, maskable, rng, *, mask_id, vocab_size, ratio=0.15, geometric_p=0.2,
              max_span=10, random_low=0):
  """(masked ids, positions, labels) for one sequence.

  ids [L] int; maskable [L] bool (real, non-special tokens). Spans are drawn over the maskable
  positions in order; lengths ~ Geometric(geometric_p) clipped to max_span. Random replacements are
  drawn from [random_low, vocab_size).
  """
  ids = np.asarray(ids)
  candidates = np.flatnonzero(maskable)
  n = len(candidates)
  if n == 0:
    return ids.copy(), np.zeros(0, np.int32), np.zeros(0, ids.dtype)
  budget = max(1, int(round(ratio * n)))
  chosen = _span_starts_and_lengths(
      n, budget, rng, lambda: min(rng.geometric(geometric_p), max_span))
  positions = candidates[chosen][:budget] if chosen.sum() > budget else candidates[chosen]
  labels = ids[positions].copy()
  masked = ids.copy()
  action = rng.uniform(size=len(positions))
  masked[positions[action < 0.8]] = mask_id
  replace = positions[(action >= 0.8) & (action < 0.9)]
  masked[replace] = rng.integers(random_low, vocab_size, size=len(replace))
  return masked, positions.astype(np.int32), labels


def seq2seq_split(ids, rng, *, ratio=0.25, max_span=5):
  """(source, target): spans of uniform length in [1, max_span] covering `ratio` of `ids`."""
  ids = np.asarray(ids)
  n = len(ids)
  if n < 2:
    raise ValueError(f"seq2seq_split: expected at least 2 tokens, found {n}")
  budget = min(n - 1, max(1, int(np.ceil(ratio * n))))
  chosen = _span_starts_and_lengths(n, budget, rng, lambda: rng.integers(1, max_span + 1))
  if chosen.all():  # keep at least one source token
    chosen[rng.integers(0, n)] = False
  return ids[~chosen], ids[chosen]


def iou_matrix(boxes):
  """[N, N] intersection over union of boxes [N, 4] = (x1, y1, x2, y2)."""
  boxes = np.asarray(boxes, np.float64)
  x1 = np.maximum(boxes[:, None, 0], boxes[None, :, 0])
  y1 = np.maximum(boxes[:, None, 1], boxes[None, :, 1])
  x2 = np.minimum(boxes[:, None, 2], boxes[None, :, 2])
  y2 = np.minimum(boxes[:, None, 3], boxes[None, :, 3])
  inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
  area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  union = area[:, None] + area[None, :] - inter
  return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def region_anchors(valid, rng, *, ratio=0.15):
  """[N] bool: each real region an anchor with probability `ratio` (at least one)."""
  valid = np.asarray(valid, bool)
  real = np.flatnonzero(valid)
  anchors = np.zeros(len(valid), bool)
  if len(real) == 0:
    return anchors
  chosen = real[rng.uniform(size=len(real)) < ratio]
  if len(chosen) == 0:
    chosen = rng.choice(real, 1)
  anchors[chosen] = True
  return anchors


def region_mask(boxes, valid, rng, *, ratio=0.15, overlap_ratio=0.4):
  """[N] bool: anchors drawn with probability `ratio` among real regions (at least one), plus
  every real region whose IoU with an anchor exceeds overlap_ratio."""
  valid = np.asarray(valid, bool)
  mask = region_anchors(valid, rng, ratio=ratio)
  if not mask.any():
    return mask
  overlaps = iou_matrix(boxes)[mask] > overlap_ratio  # [anchors, N]
  return mask | (overlaps.any(axis=0) & valid)
