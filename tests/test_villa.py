"""VILLA (tasks/villa.py) against the rounds written out by hand on a linear-softmax toy whose
gradients are analytic, the projections' rules, and a tiny SNLI-VE fine-tune that trains with it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unimo_jax.tasks.villa import VillaSettings, ascent_step, symmetric_kl, villa_loss

B, N, H, R, F, C = 3, 4, 5, 2, 6, 3


def toy_inputs(rng):
  return {"emb": rng.normal(size=(B, N, H)).astype(np.float32),
          "feat": rng.normal(size=(B, R + 1, F)).astype(np.float32),
          "label": rng.integers(0, C, size=B)}


def toy_branch(params, inputs, rng):
  """logits_b = sum_n (emb + text_delta)_bn Wt + sum_r (feat + region_delta)_br Wr."""
  emb = inputs["emb"] + inputs.get("text_delta", 0.0)
  feat = inputs["feat"] + inputs.get("region_delta", 0.0)
  logits = emb.sum(1) @ params["wt"] + feat.sum(1) @ params["wr"]  # [B, C]
  logp = jax.nn.log_softmax(logits)
  loss = -jnp.take_along_axis(logp, inputs["label"][:, None], 1).mean()
  return loss, logits, jnp.ones(B)


def np_softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def reference(params, inputs, s: VillaSettings, frozen=None):
  """The rounds by hand: dCE/dlogits = (p - onehot) / B, so dL/d(delta_bn) = that @ W^T.
  Returns (total, each round's perturbations); `frozen` replays given perturbations instead."""
  wt, wr = (np.asarray(params[k], np.float64) for k in ("wt", "wr"))
  emb, feat, y = inputs["emb"], inputs["feat"], inputs["label"]
  onehot = np.eye(C)[y]
  dt, dr = np.zeros((B, N, H)), np.zeros((B, R + 1, F))  # init_mag 0

  def forward(dt, dr):
    z = (emb + dt).sum(1) @ wt + (feat + dr).sum(1) @ wr
    p = np_softmax(z)
    return -np.mean(np.log(p[np.arange(B), y])), z, p

  def kl(z1, z2):
    p, q = np_softmax(z1), np_softmax(z2)
    return np.mean(np.sum(p * np.log(p / q) + q * np.log(q / p), -1))

  def step(delta, grad):
    norm = np.maximum(np.sqrt((grad.reshape(B, -1) ** 2).sum(-1)), 1e-8)[:, None, None]
    delta = delta + s.lr * grad / norm
    if s.max_norm > 0:  # the original compares the gradient's norm
      delta = delta * np.where(norm > s.max_norm, s.max_norm / norm, 1.0)
    return delta

  total, used = 0.0, []
  for k in range(s.steps):
    if frozen is not None:
      dt, dr = frozen[k]
    used.append((dt, dr))
    clean, zc, _ = forward(0, 0)
    text, zt, pt = forward(dt, 0)
    image, zi, pi = forward(0, dr)
    total += (clean + text + image) / s.steps + s.kl_weight * (kl(zc, zt) + kl(zc, zi))
    g_logits_t, g_logits_i = (pt - onehot) / B, (pi - onehot) / B
    dt = step(dt, np.broadcast_to((g_logits_t @ wt.T)[:, None], dt.shape))
    dr = step(dr, np.broadcast_to((g_logits_i @ wr.T)[:, None], dr.shape))
  return total, used


@pytest.mark.parametrize("max_norm", [0.0, 0.05])
def test_villa_rounds_equal_the_hand_computation(max_norm):
  rng = np.random.default_rng(0)
  params = {"wt": jnp.asarray(rng.normal(size=(H, C)), jnp.float32),
            "wr": jnp.asarray(rng.normal(size=(F, C)), jnp.float32)}
  inputs = toy_inputs(rng)
  s = VillaSettings(steps=3, lr=0.3, init_mag=0.0, max_norm=max_norm, kl_weight=1.5)
  masks = dict(text_mask=jnp.ones((B, N), bool), region_mask=jnp.ones((B, R + 1), bool))
  fn = lambda p: villa_loss(toy_branch, p, inputs, jax.random.key(0), s, hidden_size=H,
                            feature_dim=F, **masks)
  loss, metrics = fn(params)
  expected, used = reference(params, inputs, s)
  np.testing.assert_allclose(float(loss), expected, rtol=2e-5)
  assert float(metrics["text_delta_kl"]) > 1e-7  # the perturbations moved the predictions
  # the perturbations are constants to the parameters' gradient: it equals the finite-difference
  # gradient of the rounds' losses with each round's perturbation frozen
  grad = jax.grad(lambda p: fn(p)[0])(params)
  eps = 1e-3
  for name in ("wt", "wr"):
    for index in ((0, 0), (1, 2), (3, 1)):
      bump = np.zeros(params[name].shape, np.float32)
      bump[index] = eps
      up = reference(dict(params, **{name: params[name] + bump}), inputs, s, used)[0]
      down = reference(dict(params, **{name: params[name] - bump}), inputs, s, used)[0]
      np.testing.assert_allclose(float(grad[name][index]), (up - down) / (2 * eps), rtol=2e-3,
                                 atol=1e-4)


def _dot_count(jaxpr) -> int:
  from unimo_jax.compile.analysis import _sub_jaxprs
  return sum(1 if e.primitive.name == "dot_general" else
             sum(_dot_count(j) for v in e.params.values() for j in _sub_jaxprs(v))
             for e in jaxpr.eqns)


def test_villa_step_computes_no_dead_matmuls():
  """The perturbations' gradients are taken for the first steps - 1 rounds only: the update after
  the last round would be dead code, which XLA drops, and a jaxpr FLOP count (the compile report's
  model FLOPs) would count. Per round the toy's parameter gradient runs 3 forward branches (2
  matmuls each) and 3 backward (2 each); each perturbation's gradient is 1 matmul."""
  from jax.interpreters import partial_eval as pe
  rng = np.random.default_rng(0)
  params = {"wt": jnp.zeros((H, C)), "wr": jnp.zeros((F, C))}
  inputs = toy_inputs(rng)
  masks = dict(text_mask=jnp.ones((B, N), bool), region_mask=jnp.ones((B, R + 1), bool))
  for steps in (1, 3):
    s = VillaSettings(steps=steps, init_mag=0.0)
    jaxpr = jax.make_jaxpr(jax.grad(lambda p: villa_loss(
        toy_branch, p, inputs, jax.random.key(0), s, hidden_size=H, feature_dim=F,
        **masks)[0]))(params).jaxpr
    live, _ = pe.dce_jaxpr(jaxpr, [True] * len(jaxpr.outvars))
    assert _dot_count(jaxpr) == _dot_count(live) == steps * 12 + (steps - 1) * 2


def test_projections():
  s_unimo = VillaSettings(lr=1.0, max_norm=0.5, projection="unimo")
  s_delta = VillaSettings(lr=1.0, max_norm=0.5, projection="delta")
  delta = jnp.zeros((2, 1, 2))
  grad = jnp.asarray([[[3.0, 4.0]], [[0.03, 0.04]]])  # gradient norms 5 and 0.05
  # unimo: delta + g/|g| = unit steps; the first row's gradient norm 5 > 0.5 rescales by 0.5/5
  got = np.asarray(ascent_step(delta, grad, s_unimo))
  np.testing.assert_allclose(got, [[[0.06, 0.08]], [[0.6, 0.8]]], rtol=1e-6)
  # delta: both unit steps exceed 0.5 and are cut to norm 0.5
  got = np.asarray(ascent_step(delta, grad, s_delta))
  np.testing.assert_allclose(np.linalg.norm(got.reshape(2, -1), axis=1), [0.5, 0.5], rtol=1e-6)
  rng = np.random.default_rng(1)
  for _ in range(20):  # the 'delta' projection bounds the perturbation
    d = jnp.asarray(rng.normal(size=(4, 3, 5)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(4, 3, 5)), jnp.float32)
    norms = np.linalg.norm(np.asarray(ascent_step(d, g, s_delta)).reshape(4, -1), axis=1)
    assert np.all(norms <= 0.5 + 1e-5)
  inf = VillaSettings(lr=1.0, max_norm=0.3, norm_type="inf")
  got = np.asarray(ascent_step(delta, grad, inf))
  np.testing.assert_allclose(got, [[[0.3, 0.3]], [[0.3, 0.3]]])  # g / max|g| = 0.75, 1 -> clip


def test_symmetric_kl_by_hand():
  p, q = np.array([0.7, 0.2, 0.1]), np.array([0.2, 0.5, 0.3])
  expected = np.sum(p * np.log(p / q)) + np.sum(q * np.log(q / p))
  got = symmetric_kl(jnp.log(jnp.asarray([p, q])), jnp.log(jnp.asarray([q, q])),
                     jnp.asarray([1.0, 1.0]))
  np.testing.assert_allclose(float(got), expected / 2, rtol=1e-5)  # the second row scores 0


def test_bad_settings_are_named():
  with pytest.raises(ValueError, match="norm_type"):
    VillaSettings(norm_type="l1")
  with pytest.raises(ValueError, match="unknown fields"):
    VillaSettings.from_config({"type": "villa", "stepz": 3})
