"""Evaluation metrics: recall@K on crafted similarities, mirrored images, layout sensitivity."""

import jax
import numpy as np

from unimo_jax.metrics.retrieval import recall_at_k
from unimo_jax.train.evaluate import mirrored_image


def test_recall_at_k_on_a_crafted_matrix():
  sim = np.array([[0.9, 0.1, 0.2, 0.0],   # right answer first
                  [0.8, 0.5, 0.1, 0.0],   # second
                  [0.3, 0.4, 0.1, 0.2],   # last of four
                  [0.0, 0.0, 0.7, 0.7]])  # tied with one other: counted in the query's favour
  assert recall_at_k(sim, ks=(1, 2, 3)) == {"R@1": 0.5, "R@2": 0.75, "R@3": 0.75}


def test_mirrored_image_flips_real_boxes_and_pixels():
  inputs = {"region_locations": np.array([[0.1, 0.2, 0.3, 0.6, 0.08], [0, 0, 0, 0, 0]], np.float32),
            "region_mask": np.array([1, 0], bool), "region_features": np.ones((2, 3), np.float32)}
  out = mirrored_image(inputs)
  np.testing.assert_allclose(out["region_locations"][0], [0.7, 0.2, 0.9, 0.6, 0.08], atol=1e-7)
  np.testing.assert_array_equal(out["region_locations"][1], 0)  # padding stays padding
  np.testing.assert_allclose(mirrored_image(out)["region_locations"], inputs["region_locations"],
                             atol=1e-7)
  pixels = np.arange(2 * 3 * 1, dtype=np.float32).reshape(2, 3, 1)
  np.testing.assert_array_equal(mirrored_image({"pixels": pixels})["pixels"][:, :, 0],
                                [[2, 1, 0], [5, 4, 3]])


def test_layout_sensitivity_is_zero_only_for_a_model_blind_to_boxes():
  from unimo_jax.model import Unimo, init_params
  from unimo_jax.model.presets import model_config
  config = model_config("tiny")
  model = Unimo(config)
  rng = np.random.default_rng(0)
  image = {"region_features": rng.normal(size=(4, 3, 32)).astype(np.float32),
           "region_locations": rng.uniform(0, 0.5, size=(4, 3, 5)).astype(np.float32),
           "region_mask": np.ones((4, 3), bool)}
  mirrored = jax.tree.map(lambda *xs: np.stack(xs), *[mirrored_image(
      jax.tree.map(lambda x, i=i: x[i], image)) for i in range(4)])
  embed = lambda p, b: np.asarray(model.apply({"params": p}, b, heads={"contrastive"})[
      "image_embedding"])
  params = jax.tree.map(np.array, init_params(config, jax.random.key(0)))
  params["region_embeddings"]["image_loc"]["kernel"] *= 50.0  # boxes weigh like features
  seen, flipped = embed(params, image), embed(params, mirrored)
  assert np.abs(seen - flipped).max() > 1e-3  # the embedding moves with the layout
  sensitivity = 1.0 - float(np.mean(np.sum(seen * flipped, -1)))
  assert sensitivity > 0
  params["region_embeddings"]["image_loc"]["kernel"][:] = 0.0  # boxes no longer reach the model
  np.testing.assert_array_equal(embed(params, image), embed(params, mirrored))
