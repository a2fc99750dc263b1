"""The full pretraining loss: sharded over a (data, fsdp, tensor) mesh equals one device."""

import json
import math

import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from unimo_jax.model.params import abstract_params, init_boxed_params
from unimo_jax.parallel import batch_sharding, logical_to_sharding, make_mesh, rules_from_config
from unimo_jax.objectives.pretraining_loss import TERMS, pretraining_loss
from unimo_jax.data.synthetic.random_batch import random_pretraining_batch
from train_helpers import pretrain_config





@pytest.fixture(scope="module")
def config():
  c = pretrain_config("tiny")
  c.model.dropout_rate = c.model.attention_dropout_rate = 0.0
  return c


def _loss_and_grads(config, params, batch, mesh=None):
  def scalar(p):
    total, metrics = pretraining_loss({"params": p}, batch, config, mesh=mesh)
    return total, metrics
  return jax.value_and_grad(scalar, has_aux=True)(params)


@pytest.mark.parametrize("chunk", [0, 2])
def test_sharded_pretraining_loss_equals_single_device(config, chunk):
  config = config.copy_and_resolve_references()
  config.objectives.cmcl_chunk_size = chunk
  params = nn.unbox(init_boxed_params(config.model, jax.random.key(0)))
  batch = random_pretraining_batch(config, seed=1)
  (ref_total, ref_metrics), ref_grads = jax.jit(
      lambda p, b: _loss_and_grads(config, p, b))(params, batch)
  assert {k.split("/")[0] for k in ref_metrics if "/" in k} == set(TERMS)

  mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  rules = rules_from_config(config.logical_axis_rules)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    shardings = logical_to_sharding(abstract_params(config.model), mesh, rules)
    sharded_params = jax.device_put(params, shardings)
    kernel = sharded_params["encoder"]["layer_0"]["ffn_fc_0"]["kernel"]  # [embed, mlp]
    assert kernel.sharding.spec == P("fsdp", "tensor")
    assert kernel.addressable_shards[0].data.shape == (kernel.shape[0] // 2, kernel.shape[1] // 2)
    sharded_batch = jax.tree.map(lambda x: jax.device_put(x, batch_sharding(mesh, x.ndim)), batch)
    (total, metrics), grads = jax.jit(lambda p, b: _loss_and_grads(config, p, b, mesh))(
        sharded_params, sharded_batch)
  # float32, different reduction order across 8 devices: 1e-5 relative on O(1..30) values.
  np.testing.assert_allclose(total, ref_total, rtol=1e-5)
  for key in ref_metrics:
    np.testing.assert_allclose(metrics[key], ref_metrics[key], rtol=1e-5, atol=1e-5, err_msg=key)
  # Per leaf, relative to that leaf's own scale (a global scale would let the CMCL temperature's
  # large gradient hide an error in, say, the embeddings); the floor covers leaves whose true
  # gradient is exactly zero (e.g. the key bias) and hold only rounding noise.
  scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(ref_grads))
  for path, g, r in zip(jax.tree_util.tree_flatten_with_path(ref_grads)[0],
                        jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    g, r = np.asarray(g), np.asarray(r)
    assert np.abs(g - r).max() <= 1e-4 * np.abs(r).max() + 1e-7 * scale, path[0]


def test_loss_weights_scale_terms(config):
  params = {"params": nn.unbox(init_boxed_params(config.model, jax.random.key(0)))}
  batch = random_pretraining_batch(config, seed=2)
  total, metrics = pretraining_loss(params, batch, config)
  expected = sum(float(metrics[f"{t}/loss"]) * config.loss_weights[t] for t in TERMS)
  np.testing.assert_allclose(total, expected, rtol=1e-6)
  c = config.copy_and_resolve_references()
  c.loss_weights.cmcl = 0.0
  c.loss_weights.text_mlm = 3.0
  total2, _ = pretraining_loss(params, batch, c)
  np.testing.assert_allclose(
      total2, expected - float(metrics["cmcl/loss"]) + 2.0 * float(metrics["text_mlm/loss"]),
      rtol=1e-5)
  with pytest.raises(ValueError, match="unknown \\['video'\\]"):
    pretraining_loss(params, dict(batch, video={}), config)


def test_dropout_makes_the_loss_stochastic_per_rng():
  config = pretrain_config("tiny")
  config.model.dropout_rate = config.model.attention_dropout_rate = 0.1  # the tiny config has none
  params = {"params": nn.unbox(init_boxed_params(config.model, jax.random.key(0)))}
  batch = random_pretraining_batch(config, seed=3)
  run = lambda k: float(pretraining_loss(params, batch, config, rng=jax.random.key(k),
                                         deterministic=False)[0])
  assert run(0) == run(0) and run(0) != run(1)


def test_main_job_forward_pass_writes_metrics(tmp_path):
  from unimo_jax.train.driver import check
  config = pretrain_config("tiny")
  config.mesh.data, config.mesh.fsdp = 4, 2
  metrics = check(config, tmp_path)
  saved = json.loads((tmp_path / "forward_metrics.json").read_text())
  assert saved == pytest.approx(metrics)
  assert json.loads((tmp_path / "config.json").read_text())["model"]["hidden_size"] == 64
  # A freshly initialised LM predicts close to uniformly over the vocabulary.
  assert abs(metrics["text_mlm/nll"] - math.log(config.model.vocab_size)) < 0.3
  assert metrics["cmcl/temperature"] == pytest.approx(0.07)
