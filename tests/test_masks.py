"""Attention masks: an output changes exactly when an input it may see is perturbed."""

import jax
import numpy as np
import pytest

from unimo_jax.data.synthetic.random_batch import random_regions, random_text
from unimo_jax.model import Unimo, init_params, model_config
from unimo_jax.model.masks import allowed_attention


@pytest.fixture(scope="module")
def setup():
  config = model_config("tiny")
  config.num_layers = 2
  return config, init_params(config, jax.random.key(0))


def _case(config, kind):
  """One example: 3 regions (+1 padded) and 9 text slots (last 2 padded)."""
  rng = np.random.default_rng(7)
  batch = dict(random_regions(config, rng, batch=1, regions=4, counts=[3]))
  batch["input_ids"] = random_text(config, rng, batch=1, length=9, lengths=[7])
  batch["position_ids"] = np.arange(2, 11, dtype=np.int32)[None]
  target = np.zeros((1, 9), bool)
  if kind == "seq2seq":  # text only: source = first 4 tokens, target = the next 3
    del batch["region_features"], batch["region_locations"], batch["region_mask"]
    target[0, 4:7] = True
  elif kind == "caption":  # image + 3 tag tokens are the source; the caption is the target
    target[0, 3:7] = True
  batch["target_mask"] = target
  return batch


def _may_see(kind, p, e, valid, is_target):
  """The rule of spec §1.4, spelled out independently of the implementation."""
  if p == e:
    return True
  if not valid[e]:
    return False
  if kind == "bidirectional":
    return True
  if not is_target[p]:  # source rows: the source only
    return not is_target[e]
  return (not is_target[e]) or e <= p  # target rows: all the source, the target causally


def _perturbations(batch):
  """Yields (perturbed batch, sequence positions whose embeddings the perturbation changes)."""
  image_length = batch["region_features"].shape[1] + 1 if "region_features" in batch else 0
  for j in range(image_length - 1):
    b = {k: np.array(v) for k, v in batch.items()}
    b["region_features"][0, j] += 1.5
    # A real region also moves the [IMG] slot (the mean of real regions); a padded one nothing else.
    yield b, ([0, 1 + j] if batch["region_mask"][0, j] else [1 + j])
  for j in range(batch["input_ids"].shape[1]):
    b = {k: np.array(v) for k, v in batch.items()}
    b["position_ids"][0, j] += 1  # changes the embedding without changing padding status
    yield b, [image_length + j]


@pytest.mark.parametrize("kind", ["bidirectional", "seq2seq", "caption"])
def test_output_depends_exactly_on_allowed_positions(setup, kind):
  config, params = setup
  model = Unimo(config)
  batch = _case(config, kind)
  apply = jax.jit(lambda b: model.apply({"params": params}, b, mask_kind=kind)["hidden"])
  base = np.asarray(apply(batch))
  out = model.apply({"params": params}, batch, mask_kind=kind)
  valid = np.asarray(out["valid"])[0]
  image_length = out["image_length"]
  is_target = np.concatenate([np.zeros(image_length, bool), batch["target_mask"][0]])
  checked_blocked = checked_seen = 0
  for perturbed, moved in _perturbations(batch):
    diff = np.abs(np.asarray(apply(perturbed)) - base)[0].max(axis=-1)  # [seq]
    for p in np.flatnonzero(valid):
      may_see = any(_may_see(kind, p, e, valid, is_target) for e in moved)
      if may_see:
        assert diff[p] > 1e-4, (kind, p, moved)
        checked_seen += 1
      else:
        assert diff[p] == 0.0, (kind, p, moved, diff[p])
        checked_blocked += 1
  assert checked_blocked > 0 and checked_seen > 0


def test_mask_structure_by_hand():
  valid = np.array([[1, 1, 1, 1, 0]], bool)
  target = np.array([[0, 0, 1, 1, 0]], bool)
  got = np.asarray(allowed_attention("seq2seq", valid, target))[0].astype(int)
  expected = np.array([
      [1, 1, 0, 0, 0],  # source rows: source only
      [1, 1, 0, 0, 0],
      [1, 1, 1, 0, 0],  # first target: source + itself
      [1, 1, 1, 1, 0],  # second target: source + both targets
      [1, 1, 0, 0, 0],  # padding row (never read): like a source row
  ])
  np.testing.assert_array_equal(got, expected)
  bidi = np.asarray(allowed_attention("bidirectional", valid))[0].astype(int)
  np.testing.assert_array_equal(bidi, np.tile([1, 1, 1, 1, 0], (5, 1)))
  with pytest.raises(ValueError, match="mask_kind"):
    allowed_attention("causal", valid, target)
