"""Evaluation metrics: recall@K on crafted similarities, mirrored images, layout sensitivity."""

import jax
import numpy as np

from unimo_jax.metrics.retrieval import recall_at_k
from unimo_jax.train.heldout_eval import mirrored_image, twin_kind, twin_metrics


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


def test_twin_kinds_from_the_words_that_differ():
  caption = "a small red circle is left of a large blue square"
  assert twin_kind(caption, "a small red circle is right of a large blue square") == "relation"
  assert twin_kind("a red cube is above a cone", "a red cube is below a cone") == "relation"
  assert twin_kind(caption, "a small blue circle is left of a large red square") == "binding"
  assert twin_kind(caption, "a large red circle is left of a small blue square") == "binding"
  assert twin_kind(caption, "a small red circle is left of a large blue cross") == "attribute"
  assert twin_kind(caption, "a small green circle is left of a large red square") == "attribute"


def test_twin_metrics_on_crafted_embeddings():
  """An image side blind to layout and binding (one embedding for a scene, its mirror and its
  attribute-swapped twin) scores 0.5 on relation and binding twins: of each caption / twin pair
  it prefers the same text for both images. One that encodes them scores 1.0."""
  rng = np.random.default_rng(0)

  def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)

  vocab = "a small large red blue circle square is left right of".split()
  words = {w: rng.normal(size=16) for w in vocab}
  position = rng.normal(size=(12, 16))

  def text(caption):  # word order matters: who is red, who is left
    return unit(sum(words[w] * position[k] for k, w in enumerate(caption.split())))

  def blind_image(caption):  # the objects' words only: no layout, no binding
    return unit(sum(words[w] for w in caption.split() if w not in ("left", "right")))

  scene = "a small red circle is left of a large blue square"
  mirrored = "a small red circle is right of a large blue square"
  swapped = "a small blue circle is left of a large red square"
  attribute = "a small red circle is left of a large blue circle"
  pairs = [scene, mirrored, swapped]
  owners = [0, 0, 0, 1, 2]
  twins = [mirrored, swapped, attribute, scene, scene]
  kinds = [twin_kind(pairs[o], t) for o, t in zip(owners, twins)]
  assert kinds == ["relation", "binding", "attribute", "relation", "binding"]
  captions = np.stack([text(p) for p in pairs])
  twin_embeddings = np.stack([text(t) for t in twins])
  blind = twin_metrics(np.stack([blind_image(p) for p in pairs]), captions, twin_embeddings,
                       owners, kinds)
  assert blind["twin_accuracy_relation"] == 0.5 and blind["twin_accuracy_binding"] == 0.5
  aware = twin_metrics(captions, captions, twin_embeddings, owners, kinds)  # image = its caption
  assert {k: aware[f"twin_accuracy_{k}"] for k in ("relation", "binding", "attribute")} == {
      "relation": 1.0, "binding": 1.0, "attribute": 1.0}
  assert aware["twins_relation"] == 2 and aware["twins_binding"] == 2
  # A tie (a text side that cannot tell caption and twin apart) counts half.
  same = twin_metrics(captions, captions, captions[[0]], [0], ["relation"])
  assert same["twin_accuracy"] == 0.5
