"""The batch transforms equal the per-example transforms stacked, on shards of the real layout.

For the same records and the same per-example Generators, every field of
BatchTransforms.<stream>(records, rngs) must equal np.stack of Transforms.<stream>(record, rng)
bit for bit (same dtype, same values): the batch version only changes where the array work
happens, not what is drawn. The records are read back from shards written in the base preset's
layout (100 regions x 2048 float16 features, 1,601-class float16 soft labels, float32 boxes,
40-token captions with CMCL extras), plus pixel-mode records and edge cases (no class_probs,
fewer retrieved images than slots, records with one region).
"""

import numpy as np
import pytest

from unimo_jax.data.formats.records import ShardSource, write_examples
from unimo_jax.data.pipeline.batch_transforms import BatchTransforms, anchor_iou
from unimo_jax.data.pipeline.examples import data_config
from unimo_jax.data.pipeline.masking import iou_matrix
from unimo_jax.data.pipeline.model_inputs import ModelInputs
from unimo_jax.data.pipeline.streams import Transforms, example_rngs

SPECIAL = {"cls": 0, "pad": 1, "sep": 2, "unk": 3, "mask": 50264}
VOCAB, DIM, CLASSES, REGIONS = 50265, 2048, 1601, 100


def _image(rng, i, regions=REGIONS, probs=True):
  xy = rng.uniform(0, 300, (regions, 2))
  record = {"image_id": str(i), "image_w": 640 + i, "image_h": 480 - i,
            "region_features": rng.random((regions, DIM), np.float32).astype(np.float16),
            "boxes": np.concatenate([xy, xy + rng.uniform(10, 200, (regions, 2))], 1).astype(
                np.float32)}
  if probs:
    record["class_probs"] = rng.dirichlet(np.ones(CLASSES) * 0.1, regions).astype(np.float16)
  return record


@pytest.fixture(scope="module")
def real_layout(tmp_path_factory):
  """Text, image and pair shards in the base preset's layout, read back as records."""
  root = tmp_path_factory.mktemp("real_layout")
  rng = np.random.default_rng(0)
  ids = lambda n: rng.integers(4, 50000, n).astype(np.int32)
  images = [_image(rng, i, regions=REGIONS if i % 3 else 1 + i, probs=i != 4) for i in range(6)]
  pairs = [dict(_image(rng, 10 + i, regions=REGIONS - 7 * i), caption_ids=ids(20 + 4 * i),
                paraphrase_ids=[ids(30)] * (i % 2), hard_negative_ids=[ids(38), ids(36)][:i % 3],
                retrieved_images=np.arange(i % 3, dtype=np.int64))
           for i in range(6)]
  meta = dict(region_feature_dim=DIM, num_classes=CLASSES)
  write_examples(root / "text", "text", [{"input_ids": ids(60 + 13 * i)} for i in range(6)])
  write_examples(root / "image", "image", images, **meta)
  write_examples(root / "pair", "pair", pairs, **meta)
  return {name: ShardSource(root / name) for name in ("text", "image", "pair")}


def _config(**overrides):
  cfg = data_config()
  cfg.max_text_length, cfg.max_caption_length, cfg.max_regions = 128, 40, REGIONS
  cfg.cmcl_extra_images = 2  # more slots than some pairs have retrieved images
  for k, v in overrides.items():
    setattr(cfg, k, v)
  return cfg


def _both(transforms, stream, records, seed=5):
  batch = getattr(BatchTransforms(transforms), stream)(records, example_rngs(seed, 3, len(records)))
  one = getattr(transforms, stream)
  rows = [one(r, g) for r, g in zip(records, example_rngs(seed, 3, len(records)))]
  return batch, {k: np.stack([row[k] for row in rows]) for k in rows[0]}


def _assert_same(batch, expected):
  assert sorted(batch) == sorted(expected)
  for key, want in expected.items():
    got = np.asarray(batch[key])
    assert got.dtype == want.dtype and got.shape == want.shape, (key, got.dtype, want.dtype)
    np.testing.assert_array_equal(got, want, err_msg=key)


@pytest.mark.parametrize("stream", ["text", "image", "pair"])
def test_batch_transforms_equal_the_per_example_ones_on_real_layout_shards(real_layout, stream):
  cfg = _config()
  source = real_layout[stream]
  lookup = [real_layout["image"][i] for i in range(len(real_layout["image"]))]
  inputs = ModelInputs(cfg, SPECIAL, DIM, CLASSES)
  transforms = Transforms(cfg, SPECIAL, VOCAB, inputs, image_lookup=lookup)
  records = [source[i] for i in range(len(source))]
  batch, expected = _both(transforms, stream, records)
  _assert_same(batch, expected)
  if stream == "pair":  # the draws matter: masks and extras differ between examples
    assert batch["pair_mrm/mrm_mask"].sum() > 6
    assert batch["cmcl/extra_image_valid"].tolist() == [[False, False], [True, False],
                                                        [True, True]] * 2
    assert not np.array_equal(batch["pair_mlm/input_ids"][0], batch["pair_mlm/input_ids"][1])


def test_pixel_mode_and_no_extras(tmp_path):
  """Pixel records (arrays and encoded files, randomly cropped), no CMCL extras."""
  from PIL import Image
  import io
  rng = np.random.default_rng(1)
  records = []
  for i in range(4):
    pixels = rng.integers(0, 256, (48 + 8 * i, 56, 3), dtype=np.uint8)
    record = {"image_id": str(i), "caption_ids": rng.integers(5, 90, 6).astype(np.int32)}
    if i % 2:
      buffer = io.BytesIO()
      Image.fromarray(pixels).save(buffer, format="PNG")
      record["image_bytes"] = np.frombuffer(buffer.getvalue(), np.uint8)
    else:
      record["pixels"] = pixels
    records.append(record)
  cfg = _config(image_input="pixels", cmcl_extra_images=0, cmcl_extra_positives=0,
                cmcl_hard_negatives=0, max_caption_length=12)
  transforms = Transforms(cfg, SPECIAL, 100, ModelInputs(cfg, SPECIAL, None, None, 32))
  batch, expected = _both(transforms, "pair", records)
  _assert_same(batch, expected)
  assert batch["cmcl/image/pixels"].shape == (4, 32, 32, 3)


def test_the_anchor_rows_iou_equals_the_per_image_one():
  rng = np.random.default_rng(2)
  xy = rng.uniform(0, 50, (3, 9, 2))
  boxes = np.concatenate([xy, xy + rng.uniform(0, 30, (3, 9, 2))], -1).astype(np.float32)
  boxes[1, 4:] = 0  # padding rows: zero area, IoU 0
  anchors = rng.random((3, 9)) < 0.4
  anchors[2] = False  # an image without anchors contributes no rows
  image, iou = anchor_iou(boxes, anchors)
  rows = [(b, r) for b in range(3) for r in range(9) if anchors[b, r]]
  assert image.tolist() == [b for b, _ in rows]
  for k, (b, r) in enumerate(rows):
    np.testing.assert_array_equal(iou[k], iou_matrix(boxes[b])[r])
  assert iou.max() == pytest.approx(1.0)
