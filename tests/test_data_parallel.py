"""gradient_sum='once' (train/data_parallel.py): the per-device step gives the partitioner's loss,
metrics and gradients, sends each gradient over the network once, draws dropout per device, and
is refused where it cannot run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from test_pretrain_loss import load_config
from unimo_jax.compile.analysis import collectives
from unimo_jax.data.random_batch import random_pretraining_batch
from unimo_jax.model import init_params
from unimo_jax.parallel import BATCH_AXES, batch_sharding, make_mesh
from unimo_jax.train.data_parallel import check_gradient_sum, summed_once
from unimo_jax.train.step import loss_and_grads, pretraining_loss_fn

DEVICES = 8


@pytest.fixture(scope="module")
def config():
  c = load_config("tiny", batch=16)
  assert c.model.dropout_rate == c.model.attention_dropout_rate == 0.0  # tiny: no dropout
  c.data.cmcl_extra_images = 1  # every CMCL extra kind in the comparison (tiny has none)
  return c


@pytest.fixture(scope="module")
def mesh():
  return make_mesh({"data": DEVICES})


def _compiled_grads(config, mesh, gradient_sum, batch, accumulation=1):
  """(run(batch) -> ((loss, metrics), grads) on the host, the compiled program's HLO text)."""
  c = config.copy_and_resolve_references()
  c.gradient_sum, c.optimizer.accumulation_steps = gradient_sum, accumulation
  params = init_params(c.model, jax.random.key(0))
  fn = jax.jit(lambda p, b: loss_and_grads(p, b, jax.random.key(1), c,
                                           pretraining_loss_fn(c, mesh), mesh))
  place = lambda b: jax.tree.map(
      lambda x: jax.device_put(x, batch_sharding(mesh, np.ndim(x))), b)
  with jax.set_mesh(mesh):
    compiled = fn.lower(params, place(batch)).compile()
  return (lambda b: jax.device_get(compiled(params, place(b)))), compiled.as_text()


def _assert_close(got, want):
  (loss, metrics), grads = got
  (want_loss, want_metrics), want_grads = want
  # float32 sums over the same rows in another order (per device, then across devices)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
  assert sorted(metrics) == sorted(want_metrics)
  for key in want_metrics:
    np.testing.assert_allclose(metrics[key], want_metrics[key], rtol=1e-5, atol=1e-6,
                               err_msg=key)
  # gradients: relative to the largest of all (the key biases' are zero up to rounding: softmax
  # ignores a constant added to every key's score)
  scale = max(float(np.abs(w).max()) for w in jax.tree.leaves(want_grads))
  for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6 * scale,
                               err_msg=jax.tree_util.keystr(path))


def test_once_gives_the_partitioners_step_and_sums_each_gradient_once(config, mesh):
  batch = random_pretraining_batch(config, seed=5)
  assert "extra_text" in batch["cmcl"] and "extra_image" in batch["cmcl"]
  once, once_text = _compiled_grads(config, mesh, "once", batch)
  partitioner, partitioner_text = _compiled_grads(config, mesh, "partitioner", batch)
  got = once(batch)
  _assert_close(got, partitioner(batch))
  # the counts are exact: the global batch's, not one device's
  metrics = got[0][1]
  assert metrics["text_mlm/tokens"] == float(batch["text_mlm"]["lm_weights"].sum())
  assert metrics["image_mrm/regions"] == float(batch["image_mrm"]["mrm_mask"].sum())
  # All-reduce bytes of the compiled programs: one copy of the gradients under 'once' (plus the
  # loss and metric sums), several under the partitioner (a sum per forward pass).
  grad_bytes = sum(x.size * 4 for x in jax.tree.leaves(got[1]))
  sent = {mode: collectives(text)["all-reduce"]["bytes"]
          for mode, text in (("once", once_text), ("partitioner", partitioner_text))}
  assert sent["once"] < 1.1 * grad_bytes, (sent, grad_bytes)
  assert sent["partitioner"] > 3 * grad_bytes, (sent, grad_bytes)


def _device_major_micro_batches(batch, devices, count):
  """The rows reordered so that micro-batch i of the global batch holds micro-batch i of every
  device's rows: what gradient_sum='once' accumulates over."""
  def reorder(x):
    local = x.shape[0] // devices
    size = local // count
    order = [d * local + i * size + j for i in range(count) for d in range(devices)
             for j in range(size)]
    return x[np.asarray(order)]
  return jax.tree.map(reorder, batch)


def test_once_accumulates_each_devices_micro_batches(config, mesh):
  """With accumulation, micro-batch i is made of every device's i-th part of its rows (so CMCL
  contrasts those rows), equal to the partitioner's step on rows reordered that way."""
  batch = random_pretraining_batch(config, seed=6)
  batch = {k: batch[k] for k in ("text_mlm", "cmcl")}  # one counted term and CMCL: faster compiles
  once = _compiled_grads(config, mesh, "once", batch, accumulation=2)[0](batch)
  partitioner = _compiled_grads(config, mesh, "partitioner", batch, accumulation=2)[0]
  _assert_close(once, partitioner(_device_major_micro_batches(batch, DEVICES, 2)))
  unordered = partitioner(batch)
  assert abs(float(once[0][0]) - float(unordered[0][0])) > 1e-4  # the grouping matters


def test_each_device_draws_its_own_dropout_masks(mesh):
  def grad_fn(params, batch, rng):
    index = jax.lax.axis_index(BATCH_AXES)
    draws = jax.lax.psum(jax.nn.one_hot(index, DEVICES) * jax.random.uniform(rng), BATCH_AXES)
    loss = jax.lax.psum(jnp.sum(batch * params["w"]), BATCH_AXES)
    return (loss, {"draws": draws}), {"w": jnp.sum(batch) + 0 * params["w"]}

  rows = jnp.arange(DEVICES * 2, dtype=jnp.float32)
  with jax.set_mesh(mesh):
    (loss, metrics), grads = jax.jit(summed_once(grad_fn, mesh))(
        {"w": jnp.float32(3.0)}, rows, jax.random.key(0))
  assert len(set(np.asarray(metrics["draws"]).tolist())) == DEVICES
  assert float(loss) == 3.0 * float(rows.sum())
  assert float(grads["w"]) == float(rows.sum())  # every device's share, summed once


def test_once_is_refused_where_it_cannot_run():
  from unimo_jax.tasks.registry import task_class
  from unimo_jax.train.pretraining import PretrainingExperiment
  sizes = {"data": 4, "fsdp": 1, "tensor": 1}
  check_gradient_sum("once", sizes, PretrainingExperiment)
  check_gradient_sum("partitioner", dict(sizes, fsdp=2), task_class("glue"))
  with pytest.raises(ValueError, match=r"expected mesh fsdp=1 and tensor=1, found fsdp=2"):
    check_gradient_sum("once", dict(sizes, fsdp=2), PretrainingExperiment)
  with pytest.raises(ValueError, match=r"written for the global batch only"):
    check_gradient_sum("once", sizes, task_class("glue"))
  with pytest.raises(ValueError, match=r"expected one of \('partitioner', 'once'\), found 'twice'"):
    check_gradient_sum("twice", sizes, PretrainingExperiment)
