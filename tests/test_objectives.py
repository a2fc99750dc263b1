"""Objectives against hand computation on small inputs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unimo_jax.objectives import (cmcl_loss, mlm_loss, mrm_loss, seq2seq_loss,
                                  weighted_total)

LOGITS = np.array([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]], np.float32)  # [1, 2, 3]
LSE = math.log(math.e + math.e ** 2 + math.e ** 3)


def test_mlm_counts_masked_positions_only():
  batch = {"lm_labels": np.array([[2, 1]]), "lm_weights": np.array([[1.0, 0.0]])}
  loss, m = mlm_loss({"lm_logits": LOGITS}, batch)
  np.testing.assert_allclose(loss, LSE - 3.0, rtol=1e-6)
  assert float(m["accuracy"]) == 1.0 and float(m["tokens"]) == 1.0
  batch = {"lm_labels": np.array([[2, 1]]), "lm_weights": np.array([[1.0, 1.0]])}
  loss, m = mlm_loss({"lm_logits": LOGITS}, batch)
  np.testing.assert_allclose(loss, ((LSE - 3.0) + math.log(3.0)) / 2, rtol=1e-6)
  np.testing.assert_allclose(m["accuracy"], 0.5)  # argmax of the all-zero row is 0, label 1


def test_seq2seq_label_smoothing():
  batch = {"lm_labels": np.array([[2, 0]]), "lm_weights": np.array([[1.0, 0.0]])}
  eps = 0.1
  loss, m = seq2seq_loss({"lm_logits": LOGITS}, batch, label_smoothing=eps)
  nll = LSE - 3.0
  uniform = LSE - 2.0  # -mean(log p) = lse - mean(logits)
  np.testing.assert_allclose(loss, (1 - eps) * nll + eps * uniform, rtol=1e-6)
  np.testing.assert_allclose(m["nll"], nll, rtol=1e-6)
  unsmoothed, _ = seq2seq_loss({"lm_logits": LOGITS}, batch)
  np.testing.assert_allclose(unsmoothed, nll, rtol=1e-6)


def test_no_masked_tokens_gives_zero_not_nan():
  batch = {"lm_labels": np.zeros((1, 2), np.int32), "lm_weights": np.zeros((1, 2))}
  loss, m = mlm_loss({"lm_logits": LOGITS}, batch)
  assert float(loss) == 0.0 and float(m["tokens"]) == 0.0


def test_mrm_regression_and_soft_label_kl():
  outputs = {
      "region_feature_pred": np.array([[[1.0, 2.0], [0.0, 0.0]]], np.float32),
      "region_class_logits": np.array([[[0.0, math.log(3.0)], [9.0, 0.0]]], np.float32),
  }
  batch = {
      "region_target_features": np.array([[[0.0, 0.0], [5.0, 5.0]]], np.float32),
      "region_soft_labels": np.array([[[0.5, 0.5], [0.0, 1.0]]], np.float32),
      "mrm_mask": np.array([[1, 0]]),  # only the first region is masked
  }
  loss, m = mrm_loss(outputs, batch)
  mse = (1.0 + 4.0) / 2
  kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
  np.testing.assert_allclose(m["feature_mse"], mse, rtol=1e-6)
  np.testing.assert_allclose(m["class_kl"], kl, rtol=1e-5)
  np.testing.assert_allclose(loss, mse + kl, rtol=1e-6)
  assert float(m["class_accuracy"]) == 0.0 and float(m["regions"]) == 1.0
  weighted, _ = mrm_loss(outputs, batch, regression_weight=0.5, classification_weight=2.0)
  np.testing.assert_allclose(weighted, 0.5 * mse + 2.0 * kl, rtol=1e-6)


def test_cmcl_by_hand_with_a_hard_negative():
  eye = np.eye(2, dtype=np.float32)
  emb = {"image": eye, "text": eye}
  loss, m = cmcl_loss(emb, jnp.float32(1.0))
  plain = math.log(math.e + 1) - 1.0
  np.testing.assert_allclose(loss, plain, rtol=1e-6)
  # Row 0 gets a rewritten caption identical to its true one: a valid hard negative.
  emb = dict(emb, extra_text=np.array([[[1.0, 0.0]], [[0.0, 0.0]]], np.float32),
             extra_text_positive=np.array([[False], [False]]),
             extra_text_valid=np.array([[True], [False]]))
  loss, m = cmcl_loss(emb, jnp.float32(1.0))
  row0 = math.log((2 * math.e + 1) / math.e)
  np.testing.assert_allclose(m["i2t_loss"], (row0 + plain) / 2, rtol=1e-6)
  np.testing.assert_allclose(m["t2i_loss"], plain, rtol=1e-6)
  np.testing.assert_allclose(loss, ((row0 + plain) / 2 + plain) / 2, rtol=1e-6)
  assert float(m["hard_negative_accuracy"]) == 0.0  # a tie is not a win


def _reference_row_loss(anchor, columns, own, extras, valid, positive, t, form="mean_log"):
  """Mean over the row's positives of -log(exp(s_p) / sum over all) ('mean_log'), or the paper's
  -log(sum over positives / sum over all) ('log_sum'), in float64."""
  pos = [anchor @ own]
  allc = [anchor @ c for c in columns]
  for e, extra in enumerate(extras):
    if valid[e]:
      allc.append(anchor @ extra)
      if positive[e]:
        pos.append(anchor @ extra)
  denominator = sum(math.exp(s / t) for s in allc)
  if form == "log_sum":
    return -math.log(sum(math.exp(s / t) for s in pos) / denominator)
  return sum(-math.log(math.exp(s / t) / denominator) for s in pos) / len(pos)


def _reference_cmcl(emb, t, form="mean_log"):
  """Row by row, straight from the CMCL formula."""
  img, txt = (np.asarray(emb[k], np.float64) for k in ("image", "text"))
  i2t = [_reference_row_loss(img[i], txt, txt[i], emb["extra_text"][i], emb["extra_text_valid"][i],
                             emb["extra_text_positive"][i], t, form) for i in range(len(img))]
  t2i = [_reference_row_loss(txt[i], img, img[i], emb["extra_image"][i], emb["extra_image_valid"][i],
                             [True] * emb["extra_image"].shape[1], t, form)
         for i in range(len(img))]
  return (np.mean(i2t) + np.mean(t2i)) / 2


def random_cmcl_embeddings(rng, batch=8, dim=6, extra_texts=3, extra_images=2):
  def unit(*shape):
    x = rng.normal(size=shape)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
  valid_t = rng.uniform(size=(batch, extra_texts)) < 0.7
  valid_t[0] = False  # a row with no extras at all
  return {
      "image": unit(batch, dim), "text": unit(batch, dim),
      "extra_text": unit(batch, extra_texts, dim),
      "extra_text_positive": rng.uniform(size=(batch, extra_texts)) < 0.4,
      "extra_text_valid": valid_t,
      "extra_image": unit(batch, extra_images, dim),
      "extra_image_valid": rng.uniform(size=(batch, extra_images)) < 0.6,
  }


@pytest.mark.parametrize("form", ["mean_log", "log_sum"])
def test_cmcl_matches_row_by_row_reference(form):
  emb = random_cmcl_embeddings(np.random.default_rng(0))
  for t in (0.07, 0.5):
    loss, _ = cmcl_loss(emb, jnp.float32(t), positive_form=form)
    np.testing.assert_allclose(loss, _reference_cmcl(emb, t, form), rtol=1e-5)
  other = "log_sum" if form == "mean_log" else "mean_log"
  assert abs(float(loss) - _reference_cmcl(emb, 0.5, other)) > 1e-3  # the forms differ here
  with pytest.raises(ValueError, match="cmcl_positive_form"):
    cmcl_loss(emb, jnp.float32(0.5), positive_form="sum")


def test_cmcl_extra_positive_by_hand():
  eye = np.eye(2, dtype=np.float32)
  # Row 0's image has a paraphrase equal to the other image's caption [0, 1]: logit 0.
  emb = {"image": eye, "text": eye, "extra_text": np.array([[[0.0, 1.0]], [[0.0, 0.0]]], np.float32),
         "extra_text_positive": np.array([[True], [True]]),
         "extra_text_valid": np.array([[True], [False]])}
  _, m = cmcl_loss(emb, jnp.float32(1.0))
  denominator = math.e + 1 + 1  # own caption, the other caption, the paraphrase
  row0 = 0.5 * ((math.log(denominator) - 1.0) + (math.log(denominator) - 0.0))
  plain = math.log(math.e + 1) - 1.0
  np.testing.assert_allclose(m["i2t_loss"], (row0 + plain) / 2, rtol=1e-6)


def test_cmcl_absent_extras_have_no_effect_and_no_gradient():
  emb = random_cmcl_embeddings(np.random.default_rng(1))
  emb["extra_text_valid"][:] = False
  emb["extra_image_valid"][:] = False
  with_masked, _ = cmcl_loss(emb, jnp.float32(0.1))
  bare, _ = cmcl_loss({"image": emb["image"], "text": emb["text"]}, jnp.float32(0.1))
  np.testing.assert_allclose(with_masked, bare, rtol=1e-6)
  grads = jax.grad(lambda x: cmcl_loss(dict(emb, extra_text=x), jnp.float32(0.1))[0])(
      emb["extra_text"])
  assert np.all(np.isfinite(grads)) and float(np.abs(grads).max()) == 0.0


def test_weighted_total_reports_every_term():
  terms = {"a": (jnp.float32(1.0), {"loss": 1.0}), "b": (jnp.float32(2.0), {"acc": 0.3}),
           "c": (jnp.float32(7.0), {"loss": 7.0})}
  total, m = weighted_total(terms, {"a": 0.5, "b": 2.0, "c": 0.0})
  np.testing.assert_allclose(total, 4.5)
  assert m["b/acc"] == 0.3 and m["c/loss"] == 7.0 and float(m["total_loss"]) == 4.5
  with pytest.raises(ValueError, match=r"missing \['c'\]"):
    weighted_total(terms, {"a": 1.0, "b": 1.0})
