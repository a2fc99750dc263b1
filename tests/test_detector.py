"""The JAX detector against an independent reference (tests/detector_reference.py: torch for the
network, numpy loops for anchors, proposals, NMS, RoIPool and the selection rule) on the same
random weights, stage by stage, on images of three sizes padded into two buckets.

The network is narrowed (stem width 8, blocks 1-1-2-1) so that it runs in seconds; every code
path is the full detector's. Tolerances: float32 through ~15 convs on both sides, summed in a
different order (XLA vs oneDNN) -> 1e-4 relative on maps and features; boxes come from deltas
carrying that error through exp() -> 0.01 px on ~150 px images; which proposals and regions are
kept must be identical.
"""

import dataclasses

import jax
import numpy as np
import pytest

from tests import detector_reference as ref
from unimo_jax.convert.detector import params_from_state_dict, random_state_dict
from unimo_jax.detector import anchors, nms, preprocess
from unimo_jax.detector.config import DetectorConfig
from unimo_jax.detector.network import detect

TINY = DetectorConfig(stem_width=8, blocks=(1, 1, 2, 1), rpn_channels=16, num_classes=21,
                      num_attributes=11, class_embedding=8, attribute_hidden=16,
                      pre_nms_top_n=300, post_nms_top_n=40, min_boxes=5, max_boxes=12,
                      short_side=96, max_side=160,
                      buckets=((96, 96), (96, 160), (160, 96)))
SIZES = ((70, 110), (120, 80), (64, 64))  # -> 96x151 in (96, 160), 144x96 in (160, 96), 96x96


def _images(seed=0):
  """Smooth random RGB images (blobs of colour), so the maps have structure."""
  rng = np.random.default_rng(seed)
  images = []
  for h, w in SIZES:
    coarse = rng.uniform(0, 255, (h // 8 + 2, w // 8 + 2, 3))
    ys, xs = np.linspace(0, coarse.shape[0] - 1.01, h), np.linspace(0, coarse.shape[1] - 1.01, w)
    image = coarse[ys.astype(int)][:, xs.astype(int)] + rng.normal(0, 8, (h, w, 3))
    images.append(np.clip(image, 0, 255).astype(np.uint8))
  return images


def _run_both(state, config):
  params, _ = params_from_state_dict(state, config)
  fn = jax.jit(lambda p, x, hw, s: detect(p, x, hw, s, config=config, everything=True))
  results = []
  for image in _images():
    blob, scale = preprocess.prepare(image, config)
    bucket = preprocess.bucket_for(*blob.shape[:2], config.buckets)
    ours = jax.device_get(fn(params, preprocess.pad_to(blob, bucket)[None],
                             np.array([blob.shape[:2]], np.int32), np.array([scale], np.float32)))
    results.append((jax.tree.map(lambda a: a[0], ours), ref.detect(state, config, blob, scale),
                    blob.shape[:2]))
  return results


@pytest.fixture(scope="module")
def peaked():
  """Random weights whose class distributions are peaked: more than max_boxes regions pass."""
  state = random_state_dict(TINY, seed=1)
  state["roi_heads.box_predictor.cls_score.weight"] *= 3.0
  return _run_both(state, TINY)


@pytest.fixture(scope="module")
def flat():
  """Flat class distributions: fewer than min_boxes regions pass, the min rule decides."""
  state = random_state_dict(TINY, seed=2)
  state["roi_heads.box_predictor.cls_score.weight"] *= 0.05
  return _run_both(state, TINY)


def _close(a, b, what, rtol=1e-4):
  scale = max(float(np.abs(b).max()), 1e-6)
  err = float(np.abs(np.asarray(a) - np.asarray(b)).max())
  assert err <= rtol * scale, f"{what}: max abs error {err:.3g} against scale {scale:.3g}"


@pytest.mark.parametrize("case", ["peaked", "flat"])
def test_stages_match_the_reference(case, request):
  for ours, theirs, _ in request.getfixturevalue(case):
    fh, fw = theirs["c4"].shape[:2]
    _close(ours["c4"][:fh, :fw], theirs["c4"], "C4 map")
    assert np.abs(ours["c4"][fh:]).max(initial=0) == 0 and np.abs(ours["c4"][:, fw:]).max(
        initial=0) == 0, "the padded part of the C4 map must stay zero"
    n = int(ours["num_rois"])
    assert n == len(theirs["rois"]), f"proposals: {n} against the reference's {len(theirs['rois'])}"
    np.testing.assert_allclose(ours["rois"][:n], theirs["rois"], atol=1e-2)
    _close(ours["roi_features"][:n], theirs["roi_features"], "pooled 2048-d features")
    _close(ours["cls_prob"][:n], theirs["cls_prob"], "class probabilities")
    _close(ours["attr_prob"][:n], theirs["attr_prob"], "attribute probabilities")
    _close(ours["box_deltas"][:n].reshape(n, -1), theirs["box_deltas"], "box deltas")
    np.testing.assert_allclose(ours["confidence"][:n], theirs["confidence"], atol=1e-5)
    k = int(ours["num_boxes"])
    assert k == len(theirs["selected"])
    np.testing.assert_allclose(ours["boxes"][:k], theirs["boxes"], atol=1e-2)
    _close(ours["features"][:k], theirs["features"], "selected features")
    _close(ours["class_probs"][:k], theirs["class_probs"], "selected class probabilities")


def test_the_cases_cover_the_selection_rule(peaked, flat):
  """The fixtures reach each branch of generate_tsv.py's rule: more than max_boxes passing
  (cut to the most confident), and fewer than min_boxes (the min_boxes most confident)."""
  passing = [int((t["confidence"] >= TINY.conf_thresh).sum()) for _, t, _ in peaked]
  assert max(passing) > TINY.max_boxes, passing
  assert all(int(o["num_boxes"]) == TINY.max_boxes for o, t, _ in peaked
             if (t["confidence"] >= TINY.conf_thresh).sum() > TINY.max_boxes)
  for ours, theirs, _ in flat:
    assert (theirs["confidence"] >= TINY.conf_thresh).sum() < TINY.min_boxes
    assert int(ours["num_boxes"]) == TINY.min_boxes
    conf = theirs["confidence"]
    assert (np.diff(conf[theirs["selected"]]) <= 0).all(), "min rule: by descending confidence"


def test_anchors_are_the_caffe_table():
  """The 12 anchors of the released model (butd_detector.md's table, from generate_anchors.py)."""
  ours = anchors.base_anchors()
  np.testing.assert_array_equal(ours, ref.generate_anchors())
  np.testing.assert_array_equal(ours[0], [-38, -16, 53, 31])
  np.testing.assert_array_equal(ours[7], [-248, -248, 263, 263])
  np.testing.assert_array_equal(ours[11], [-168, -344, 183, 359])


@pytest.mark.parametrize("seed", range(4))
def test_static_nms_equals_greedy_nms(seed):
  """Random boxes on a coarse integer grid with scores drawn from 6 values: many exact ties in
  score and IoU exactly at the threshold occur."""
  rng = np.random.default_rng(seed)
  n = 60
  xy = rng.integers(0, 30, (n, 2)).astype(np.float32)
  wh = rng.integers(1, 20, (n, 2)).astype(np.float32)
  boxes = np.concatenate([xy, xy + wh], axis=1)
  scores = rng.choice(np.linspace(0.1, 0.9, 6), n).astype(np.float32)
  valid = rng.uniform(size=n) > 0.1
  for threshold in (0.3, 0.5, 0.7):
    expected = np.flatnonzero(valid)[ref.py_nms(boxes[valid], scores[valid], threshold)]
    keep, count = jax.jit(nms.greedy_nms, static_argnums=(3, 4))(boxes, scores, valid, threshold,
                                                                 n)
    assert int(count) == len(expected)
    np.testing.assert_array_equal(np.asarray(keep)[:int(count)], expected)
    kept = jax.jit(nms.kept_mask_per_class, static_argnums=3)(
        nms.iou_matrix(boxes), np.stack([scores, scores[::-1]]), valid, threshold)
    reverse = np.flatnonzero(valid)[ref.py_nms(boxes[valid], scores[::-1][valid], threshold)]
    np.testing.assert_array_equal(np.flatnonzero(np.asarray(kept)[0]), np.sort(expected))
    np.testing.assert_array_equal(np.flatnonzero(np.asarray(kept)[1]), np.sort(reverse))


@pytest.mark.parametrize("shape,scale", [((37, 53), 1.7), ((480, 640), 1.25), ((500, 375), 1.6),
                                         ((1200, 1600), 0.5), ((333, 1000), 0.93)])
def test_resize_matches_opencv(shape, scale):
  """preprocess.resize_bilinear against cv2.resize(fx=fy=scale, INTER_LINEAR) on float input,
  as test.py calls it (the exact 2x reduction included), with OpenCV's own code: builds that
  route it to Intel IPP (pip wheels) differ from that code by up to 0.01 grey levels."""
  cv2 = pytest.importorskip("cv2")
  cv2.ipp.setUseIPP(False)
  image = np.random.default_rng(0).uniform(-120, 140, shape + (3,)).astype(np.float32)
  expected = cv2.resize(image, None, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
  ours = preprocess.resize_bilinear(image, scale)
  assert ours.shape == expected.shape
  np.testing.assert_allclose(ours, expected, atol=1e-4)


def test_scale_rule_and_buckets():
  assert preprocess.scale_factor(480, 640, 600, 1000) == 600 / 480
  assert preprocess.scale_factor(300, 1000, 600, 1000) == 1.0  # 2000 > 1000: longer side -> 1000
  config = DetectorConfig()
  assert preprocess.bucket_for(600, 800, config.buckets) == (600, 800)
  assert preprocess.bucket_for(600, 801, config.buckets) == (600, 1000)
  with pytest.raises(Exception, match="fits no detector bucket"):
    preprocess.bucket_for(1001, 600, config.buckets)


def test_config_round_trip_and_unknown_field():
  config = dataclasses.replace(TINY, max_boxes=36)
  import json
  assert DetectorConfig.from_dict(json.loads(config.to_json())) == config
  with pytest.raises(Exception, match="unknown fields.*max_box"):
    DetectorConfig.from_dict({"max_box": 3})


@pytest.mark.tpu
def test_the_detector_compiles_for_a_tpu_slice_data_parallel():
  """libtpu compiles the whole detector (static-shape NMS, RoIPool, selection) for v5e-4 with
  the images split over the chips: nothing crosses chips (no collective), each chip holds the
  full parameters, and its FLOPs cover at least res5's on its images' regions."""
  from unimo_jax.detector.compile_report import compile_for_slice
  report = compile_for_slice(TINY, "v5e-4", per_chip_batch=2, bucket=(96, 160))
  assert report["fits"] and report["images_per_step"] == 8
  assert all(c["count"] == 0 for c in report["collectives"].values()), report["collectives"]
  assert report["memory"]["arguments"] >= report["parameter_bytes"]
  inner, out = TINY.stage_widths(5)
  c4 = TINY.stage_widths(4)[1]
  # res5's multiply-adds per region: 1x1 convs at 14 x 14, and the 3x3 (dilation 2, pad 2) over
  # the taps that land inside the map (XLA counts no padding): 38 of 42 per axis
  taps = sum(0 <= p + k < 14 for p in range(14) for k in (-2, 0, 2)) ** 2
  per_region = 2 * (196 * (c4 * inner + inner * out + c4 * out) + taps * inner * inner)
  per_region += 2 * (TINY.blocks[3] - 1) * (196 * 2 * out * inner + taps * inner * inner)
  assert report["cost"]["flops"] >= 2 * TINY.post_nms_top_n * per_region
  assert report["images_per_second_per_chip"] > 0
