"""Masking transforms: ratios over many draws, span lengths, 80/10/10, seq2seq coverage, IoU."""

import numpy as np
import pytest

from unimo_jax.data.pipeline.masking import iou_matrix, region_mask, seq2seq_split, span_mask

MASK, VOCAB = 4, 1000


def test_span_mask_ratio_spans_and_replacement_split():
  rng = np.random.default_rng(0)
  ids = np.arange(10, 210)  # 200 distinct tokens
  maskable = np.ones(200, bool)
  maskable[[0, 199]] = False  # [CLS] / [SEP] never masked
  ratios, kinds, span_lengths = [], np.zeros(3), []
  for _ in range(2000):
    masked, positions, labels = span_mask(ids, maskable, rng, mask_id=MASK, vocab_size=VOCAB,
                                          random_low=5)
    assert not set(positions) & {0, 199}
    np.testing.assert_array_equal(labels, ids[positions])
    ratios.append(len(positions) / maskable.sum())
    changed = masked[positions]
    kinds += [(changed == MASK).sum(), ((changed != MASK) & (changed != labels)).sum(),
              (changed == labels).sum()]
    untouched = np.setdiff1d(np.arange(200), positions)
    np.testing.assert_array_equal(masked[untouched], ids[untouched])
    runs = np.split(np.sort(positions), np.flatnonzero(np.diff(np.sort(positions)) != 1) + 1)
    span_lengths += [len(r) for r in runs]
  assert abs(np.mean(ratios) - 0.15) < 0.005
  shares = kinds / kinds.sum()
  # a random replacement can hit the original token with probability 1/995: negligible
  np.testing.assert_allclose(shares, [0.8, 0.1, 0.1], atol=0.01)
  # Geometric(0.2) clipped at 10 has mean ~3.9; adjacent spans merge, so runs are a bit longer.
  assert 3.0 < np.mean(span_lengths) < 6.0 and max(span_lengths) > 10 / 2


def test_seq2seq_split_covers_a_quarter_with_uniform_spans():
  rng = np.random.default_rng(1)
  ids = np.arange(100, 300)
  coverage = []
  for _ in range(500):
    source, target = seq2seq_split(ids, rng, ratio=0.25, max_span=5)
    assert len(source) + len(target) == 200
    np.testing.assert_array_equal(np.sort(np.concatenate([source, target])), ids)
    assert np.all(np.diff(target) > 0) and np.all(np.diff(source) > 0)  # order kept
    coverage.append(len(target) / 200)
  assert 0.25 <= min(coverage) and max(coverage) <= 0.25 + 5 / 200
  with pytest.raises(ValueError, match="at least 2 tokens"):
    seq2seq_split(ids[:1], rng)


def test_iou_by_hand():
  boxes = np.array([[0, 0, 2, 2], [1, 1, 3, 3], [10, 10, 11, 11]], np.float32)
  iou = iou_matrix(boxes)
  np.testing.assert_allclose(iou[0, 1], 1 / 7)  # intersection 1, union 4 + 4 - 1
  np.testing.assert_allclose(np.diag(iou), 1.0)
  assert iou[0, 2] == 0.0


def test_region_mask_adds_overlapping_regions():
  boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 9], [5, 5, 6, 6]],
                   np.float32)
  valid = np.array([1, 1, 1, 0, 1], bool)  # region 3 is padding
  iou = iou_matrix(boxes)
  rng = np.random.default_rng(0)
  seen_anchor_only, ratios = 0, []
  for _ in range(3000):
    mask = region_mask(boxes, valid, rng, ratio=0.15, overlap_ratio=0.4)
    assert not mask[3]  # padding never masked
    assert mask.any()  # at least one anchor
    if mask[0] or mask[1]:  # IoU(0, 1) = 0.81 > 0.4: masking one masks the other
      assert mask[0] and mask[1]
    if mask[2] and not (mask[0] or mask[4]):
      seen_anchor_only += 1
    ratios.append(mask[valid].mean())
  assert iou[0, 1] > 0.4 and iou[0, 4] < 0.4
  assert seen_anchor_only > 0
  # anchors at 15 % (at least one) and region 0/1 pulling each other in: E[ratio] is well above
  # 0.15 on this crowded image, and never 0.
  assert 0.2 < np.mean(ratios) < 0.5
  assert not region_mask(boxes, np.zeros(5, bool), rng).any()


def test_region_mask_ratio_without_overlaps():
  rng = np.random.default_rng(2)
  boxes = np.array([[i * 10, 0, i * 10 + 5, 5] for i in range(100)], np.float32)
  ratios = [region_mask(boxes, np.ones(100, bool), rng, ratio=0.15).mean() for _ in range(500)]
  assert abs(np.mean(ratios) - 0.15) < 0.01
