"""CMCL over the global batch on a (data=4, fsdp=2) mesh equals the single-device loss."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from test_objectives import random_cmcl_embeddings
from unimo_jax.objectives import cmcl_loss, cmcl_loss_chunked
from unimo_jax.parallel import batch_sharding, make_mesh

GLOBAL_BATCH, LOCAL_BATCH, DIM = 16, 2, 12
TOL = 1e-5  # float32 sums in a different order (gathers, chunked log-sum-exp); values are O(1)


@pytest.fixture(scope="module")
def mesh():
  return make_mesh({"data": 4, "fsdp": 2})


@pytest.fixture(scope="module")
def inputs():
  """Raw features and a projection W: the loss is differentiated w.r.t. W, features and t."""
  rng = np.random.default_rng(0)
  emb = random_cmcl_embeddings(rng, batch=GLOBAL_BATCH, dim=DIM, extra_texts=3, extra_images=2)
  w = rng.normal(size=(DIM, DIM)).astype(np.float32) / np.sqrt(DIM)
  return emb, w


def _embed(w, emb):
  unit = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
  out = dict(emb)
  for key in ("image", "text", "extra_text", "extra_image"):
    out[key] = unit(emb[key] @ w)
  return out


def _loss_fn(kind, mesh=None, chunk_size=None, form="mean_log"):
  def fn(w, emb, t):
    e = _embed(w, emb)
    if kind == "plain":
      return cmcl_loss(e, t, mesh=mesh, positive_form=form)
    return cmcl_loss_chunked(e, t, mesh=mesh, chunk_size=chunk_size, positive_form=form)
  return fn


def _grads(fn, w, emb, t):
  floats = {k: v for k, v in emb.items() if v.dtype == np.float32}
  def scalar(w, floats, t):
    return fn(w, dict(emb, **floats), t)[0]
  return jax.value_and_grad(scalar, argnums=(0, 1, 2))(w, floats, t)


def _shard(mesh, emb):
  return {k: jax.device_put(v, batch_sharding(mesh, v.ndim)) for k, v in emb.items()}


def _assert_close(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=TOL, rtol=TOL)


@pytest.mark.parametrize("kind,chunk,form", [
    ("plain", None, "mean_log"), ("chunked", None, "mean_log"), ("chunked", 4, "mean_log"),
    ("chunked", 16, "mean_log"), ("plain", None, "log_sum"), ("chunked", 4, "log_sum")])
def test_sharded_loss_and_grads_equal_single_device(mesh, inputs, kind, chunk, form):
  emb, w = inputs
  t = jnp.float32(0.07)
  ref_loss, ref_grads = jax.jit(lambda *a: _grads(_loss_fn("plain", form=form), *a))(w, emb, t)
  sharded = _shard(mesh, emb)
  fn = _loss_fn(kind, mesh, chunk, form)
  loss, grads = jax.jit(lambda *a: _grads(fn, *a))(w, sharded, t)
  np.testing.assert_allclose(loss, ref_loss, atol=TOL)
  _assert_close(grads, ref_grads)
  ref_metrics = cmcl_loss(_embed(w, emb), t, positive_form=form)[1]
  metrics = jax.jit(fn)(w, sharded, t)[1]
  assert set(metrics) == set(ref_metrics)
  for key in ref_metrics:
    np.testing.assert_allclose(metrics[key], ref_metrics[key], atol=TOL, err_msg=key)


def test_examples_on_other_devices_receive_gradient(mesh, inputs):
  """The gradient differs from a device-local loss's by a nonzero amount on every device's rows."""
  emb, w = inputs
  t = jnp.float32(0.07)
  sharded = _shard(mesh, emb)
  _, (_, grads, _) = jax.jit(lambda *a: _grads(_loss_fn("chunked", mesh), *a))(w, sharded, t)

  def local_only(w, floats, t):  # each device's rows contrasted with its own columns only
    e = _embed(w, dict(emb, **floats))
    blocks = [{k: v[i:i + LOCAL_BATCH] for k, v in e.items()}
              for i in range(0, GLOBAL_BATCH, LOCAL_BATCH)]
    return sum(cmcl_loss(b, t)[0] for b in blocks) / len(blocks)

  floats = {k: v for k, v in emb.items() if v.dtype == np.float32}
  local_grads = jax.grad(local_only, argnums=1)(w, floats, t)
  cross = np.abs(np.asarray(grads["text"]) - np.asarray(local_grads["text"])).sum(-1)  # [B]
  per_device = cross.reshape(-1, LOCAL_BATCH).max(-1)
  assert np.all(per_device > 1e-3), per_device


def _compiled_shapes(fn, *args):
  text = jax.jit(fn).lower(*args).compile().as_text()
  return set(re.findall(r"f32\[(\d+),(\d+)\]", text))


def test_per_device_logits_are_local_rows_by_global_columns(mesh, inputs):
  emb, w = inputs
  sharded = _shard(mesh, _embed(w, emb))
  t = jnp.float32(0.07)
  shapes = _compiled_shapes(lambda e, t: cmcl_loss(e, t, mesh=mesh)[0], sharded, t)
  assert (str(LOCAL_BATCH), str(GLOBAL_BATCH)) in shapes, shapes
  assert (str(GLOBAL_BATCH), str(GLOBAL_BATCH)) not in shapes, shapes
  chunked = _compiled_shapes(
      lambda e, t: cmcl_loss_chunked(e, t, mesh=mesh, chunk_size=4)[0], sharded, t)
  assert (str(LOCAL_BATCH), "4") in chunked, chunked
  assert (str(LOCAL_BATCH), str(GLOBAL_BATCH)) not in chunked, chunked
  assert (str(GLOBAL_BATCH), str(GLOBAL_BATCH)) not in chunked, chunked


def test_chunk_size_must_divide_the_global_batch(mesh, inputs):
  emb, _ = inputs
  with pytest.raises(ValueError, match="chunk_size 5 must divide the global batch 16"):
    cmcl_loss_chunked(emb, jnp.float32(0.1), mesh=mesh, chunk_size=5)
