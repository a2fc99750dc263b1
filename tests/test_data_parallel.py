"""gradient_sum='once' (train/data_parallel.py): the per-device step gives the partitioner's loss,
metrics and gradients, sends each gradient over the network once, draws dropout per device, and
is refused where it cannot run; 'scatter' trains like 'once' with each gradient reduce-scattered
and the optimizer moments sliced over the devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from train_helpers import pretrain_config
from train_helpers import sharded_training
from unimo_jax.compile.analysis import collectives
from unimo_jax.data.synthetic.random_batch import random_pretraining_batch
from unimo_jax.model import init_params
from unimo_jax.parallel import BATCH_AXES, batch_sharding, make_mesh
from unimo_jax.train.checkpoint import Checkpointer
from unimo_jax.train.data_parallel import (check_gradient_sum, scattered_dimension,
                                           scattered_spec, summed_once)
from unimo_jax.train.step import loss_and_grads, pretraining_loss_fn

DEVICES = 8


@pytest.fixture(scope="module")
def config():
  c = pretrain_config("tiny", batch=16)
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
  from unimo_jax.train.pretraining_experiment import PretrainingExperiment
  sizes = {"data": 4, "fsdp": 1, "tensor": 1}
  check_gradient_sum("once", sizes, PretrainingExperiment)
  check_gradient_sum("partitioner", dict(sizes, fsdp=2), task_class("glue"))
  with pytest.raises(ValueError, match=r"expected mesh fsdp=1 and tensor=1, found fsdp=2"):
    check_gradient_sum("once", dict(sizes, fsdp=2), PretrainingExperiment)
  with pytest.raises(ValueError, match=r"written for the global batch only"):
    check_gradient_sum("once", sizes, task_class("glue"))
  with pytest.raises(ValueError, match=r"'scatter' keeps a whole copy .* found fsdp=2"):
    check_gradient_sum("scatter", dict(sizes, fsdp=2), PretrainingExperiment)
  with pytest.raises(ValueError, match=r"expected one of \('partitioner', 'once', 'scatter'\), "
                                       r"found 'twice'"):
    check_gradient_sum("twice", sizes, PretrainingExperiment)


def test_scattered_dimension_is_the_largest_divisible_one():
  assert scattered_dimension((768, 3072), 16) == 1
  assert scattered_dimension((3072, 768), 16) == 0
  assert scattered_dimension((50265, 768), 16) == 1  # the word table: the hidden axis
  assert scattered_dimension((64, 64), 8) == 0  # the first of equals
  assert scattered_dimension((50265,), 16) == -1  # nothing divisible: summed whole
  assert scattered_dimension((), 8) == -1
  assert scattered_dimension((768,), 1) == -1  # one device: nothing to slice
  assert scattered_spec((768, 3072), 16) == P(None, BATCH_AXES)
  assert scattered_spec((50265,), 16) == P()


def _steps(config, mesh, gradient_sum, batch, steps=2, checkpoints=None):
  """(state on the host after `steps` train steps, the state's shardings, the step's HLO). With
  a Checkpointer, also the state after step 1 saved, restored, and stepped on to `steps`."""
  c = config.copy_and_resolve_references()
  c.gradient_sum = gradient_sum
  with sharded_training(c, mesh, batch) as (state, step, placed, shardings):
    text = step.lower(state, placed).compile().as_text()
    state, _ = step(state, placed)
    resumed = None
    if checkpoints is not None:
      checkpoints.save(1, state, {}, force=True)
      checkpoints.wait()
      resumed, _ = checkpoints.restore(jax.eval_shape(lambda: state), shardings)
    for _ in range(steps - 1):
      state, _ = step(state, placed)
      if resumed is not None:
        resumed, _ = step(resumed, placed)
  return jax.device_get(state if resumed is None else (state, resumed)), shardings, text


def test_scatter_trains_like_once_with_the_moments_sliced(config, mesh, tmp_path):
  c = config.copy_and_resolve_references()
  c.model.vocab_size = 508  # the output bias [508]: no dimension divisible by 8, summed whole
  c.optimizer.warmup_steps, c.optimizer.learning_rate = 1, 1e-3
  batch = random_pretraining_batch(c, seed=7)
  once, _, once_text = _steps(c, mesh, "once", batch, steps=3)
  checkpoints = Checkpointer(tmp_path / "ckpt", every=1, keep=1)
  (scatter, resumed), shardings, scatter_text = _steps(c, mesh, "scatter", batch, steps=3,
                                                       checkpoints=checkpoints)
  checkpoints.close()
  # resumed from step 1's checkpoint (its moments saved and restored in slices): the same state
  for got, want in zip(jax.tree.leaves(resumed), jax.tree.leaves(scatter)):
    np.testing.assert_array_equal(got, want)
  # float32 sums of the same gradients in another grouping, through three Adam steps
  for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(scatter),
                               jax.tree.leaves(once)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6,
                               err_msg=jax.tree_util.keystr(path))
  # the moments live in slices: a kernel's on the batch devices, the output bias's whole
  adam = shardings["opt_state"][1][0]
  kernel = once["params"]["encoder"]["layer_0"]["ffn_fc_0"]["kernel"]  # [64, 256]
  assert adam.mu["encoder"]["layer_0"]["ffn_fc_0"]["kernel"].shard_shape(kernel.shape) == (
      64, 256 // DEVICES)
  assert adam.nu["lm_head"]["mask_lm_out_bias"].spec == P()
  assert all(s.is_fully_replicated for s in jax.tree.leaves(shardings["params"]))
  # The network: under 'once' one all-reduce of the gradients; under 'scatter' a reduce-scatter
  # (each device receives an eighth) and an all-gather of the updated parameters (every
  # device's eighth), the all-reduces left carrying the whole output bias, the loss and metric
  # sums and the global norms. (Both have CMCL's small gathers and reduce-scatters.)
  grad_bytes = sum(x.size * 4 for x in jax.tree.leaves(once["params"]))
  sent = {name: collectives(text) for name, text in (("once", once_text),
                                                     ("scatter", scatter_text))}
  assert sent["once"]["all-reduce"]["bytes"] > 0.95 * grad_bytes
  assert sent["once"]["reduce-scatter"]["bytes"] < 0.01 * grad_bytes
  assert 0.95 < sent["scatter"]["reduce-scatter"]["bytes"] / (grad_bytes / DEVICES) < 1.1
  assert sent["scatter"]["all-gather"]["bytes"] > 0.95 * grad_bytes
  assert sent["scatter"]["all-reduce"]["bytes"] < 0.01 * grad_bytes

