"""Training: sharded == single device, no recompilation, resume after SIGKILL, two processes,
config errors, and the main job end to end."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from train_helpers import pretrain_config
from train_helpers import (ROOT, main_command, run_main, sharded_training,
                           small_run_overrides, training_losses)
from unimo_jax.parallel import make_mesh, rules_from_config
from unimo_jax.data.synthetic.random_batch import random_pretraining_batch
from unimo_jax.train.optimizer import decay_mask, learning_rate_schedule, make_optimizer
from unimo_jax.train.state import state_shardings


def _train(config, mesh_shape, steps=3, devices=None):
  mesh = make_mesh(mesh_shape, devices=devices)
  batch = random_pretraining_batch(config, seed=3)
  with sharded_training(config, mesh, batch) as (state, step, sharded_batch, _):
    losses = []
    for _ in range(steps):
      state, metrics = step(state, sharded_batch)
      losses.append(float(metrics["total_loss"]))
    return losses, state, step


@pytest.fixture(scope="module")
def config():
  c = pretrain_config("tiny", batch=8)
  c.optimizer.warmup_steps = 1
  # Step 0 has learning rate 0 (warmup); a small rate keeps the first Adam steps from overshooting
  # on the fixed random batch, so three steps lower the loss.
  c.optimizer.learning_rate = 5e-4
  return c


@pytest.fixture(scope="module")
def single(config):
  return _train(config, {"data": 1}, devices=jax.devices()[:1])


@pytest.mark.parametrize("shape", [(8, 1, 1), (4, 2, 1), (2, 2, 2)])
def test_sharded_training_equals_one_device(config, single, shape):
  losses, state, step = _train(config, dict(zip(("data", "fsdp", "tensor"), shape)))
  # float32 with a different reduction order per mesh, compounded over 3 optimizer steps
  np.testing.assert_allclose(losses, single[0], rtol=1e-4, atol=1e-4)
  assert losses[-1] < losses[0]
  kernel = state["params"]["encoder"]["layer_0"]["ffn_fc_0"]["kernel"]
  assert kernel.sharding.spec == P("fsdp", "tensor")  # [embed, mlp] by the rules table
  mu = state["opt_state"][1][0].mu["encoder"]["layer_0"]["ffn_fc_0"]["kernel"]
  assert mu.sharding == kernel.sharding  # optimizer moments live with their parameters
  assert step._cache_size() == 1  # three steps, one compilation


def test_optimizer_schedule_and_decay_mask(config):
  c = config.copy_and_resolve_references()
  c.steps, c.optimizer.warmup_steps, c.optimizer.learning_rate = 100, 10, 1e-3
  lr = learning_rate_schedule(c)
  np.testing.assert_allclose([lr(0), lr(5), lr(10), lr(55), lr(100)],
                             [0.0, 5e-4, 1e-3, 5e-4, 0.0], atol=1e-9)
  params = {"encoder": {"layer_0": {"ffn_fc_0": {"kernel": np.zeros((2, 2)), "bias": np.zeros(2)},
                                    "post_att_layer_norm": {"scale": np.ones(2),
                                                            "bias": np.zeros(2)}}},
            "text_embeddings": {"word_embedding": np.zeros((5, 2))},
            "lm_head": {"mask_lm_out_bias": np.zeros(5)},
            "temperature": {"cmcl_temperature": np.zeros(())}}
  mask = decay_mask(params)
  assert mask["encoder"]["layer_0"]["ffn_fc_0"] == {"kernel": True, "bias": False}
  assert mask["encoder"]["layer_0"]["post_att_layer_norm"] == {"scale": False, "bias": False}
  assert mask["text_embeddings"]["word_embedding"] is True
  assert mask["lm_head"]["mask_lm_out_bias"] is False
  assert mask["temperature"]["cmcl_temperature"] is False


def test_gradient_accumulation_averages_the_micro_batches(config):
  """Loss and gradients of accumulation_steps=2 are the means over the two halves."""
  from unimo_jax.model import init_params
  from unimo_jax.objectives.pretraining_loss import pretraining_loss
  from unimo_jax.train.step import loss_and_grads, pretraining_loss_fn
  c = config.copy_and_resolve_references()
  c.model.dropout_rate = c.model.attention_dropout_rate = 0.0
  c.optimizer.accumulation_steps = 2
  params = init_params(c.model, jax.random.key(0))
  batch = random_pretraining_batch(c, seed=4)
  (loss, _), grads = jax.jit(lambda p, b: loss_and_grads(p, b, jax.random.key(1), c,
                                                            pretraining_loss_fn(c, None)))(
      params, batch)
  halves = [jax.tree.map(lambda x, i=i: x[i * len(x) // 2:(i + 1) * len(x) // 2], batch)
            for i in range(2)]
  def half_loss(p, b):
    return pretraining_loss({"params": p}, b, c)[0]
  half_grad = jax.jit(jax.value_and_grad(half_loss))
  ref = [half_grad(params, h) for h in halves]
  np.testing.assert_allclose(loss, (ref[0][0] + ref[1][0]) / 2, rtol=1e-5)
  expected = jax.tree.map(lambda a, b: (a + b) / 2, ref[0][1], ref[1][1])
  for g, e in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
    np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-4,
                               atol=1e-6 * float(np.abs(np.asarray(e)).max() + 1))
  whole = pretraining_loss({"params": params}, batch, c)[0]
  assert abs(float(whole) - float(loss)) > 1e-4  # CMCL over halves is not CMCL over the whole


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_agree_with_one(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT / "tests"))
  script = str(ROOT / "tests" / "multiprocess_train.py")
  subprocess.run([sys.executable, script, str(tmp_path / "one.json")], env=env, check=True,
                 timeout=300, capture_output=True)
  address = f"127.0.0.1:{_free_port()}"
  procs = [subprocess.Popen([sys.executable, script, str(tmp_path / "two.json"), address, "2",
                             str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
           for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err.decode()[-3000:]
  one = json.loads((tmp_path / "one.json").read_text())
  two = json.loads((tmp_path / "two.json").read_text())
  assert two["processes"] == 2 and two["devices"] == one["devices"] == 4
  np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)


@pytest.mark.parametrize("override,message", [
    ("--config.model.nonexistent=1", "unknown config field"),
    ("--config.mesh.data=3", "mesh"),
    ("--config.batch.text=6", "batch.text: 6 examples cannot be split evenly"),
    ("--config.gradient_sum=once --config.mesh.data=2 --config.mesh.fsdp=2",
     "gradient_sum='once' keeps a whole copy of the parameters on every device"),
])
@pytest.mark.slow
def test_config_errors_exit_cleanly_and_write_nothing(tmp_path, override, message):
  result = run_main(main_command(tmp_path / "w", *override.split()), env_devices=4, check=False)
  assert result.returncode != 0
  assert message in result.stderr, result.stderr[-2000:]
  assert not (tmp_path / "w" / "checkpoints").exists()


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted(tmp_path, run_scenes):
  steps, half = 24, 12
  args = small_run_overrides(run_scenes, steps) + [f"--config.checkpoint_every={half}",
                                             "--config.eval_every=24"]
  run_main(main_command(tmp_path / "straight", *args))
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1")
  proc = subprocess.Popen(main_command(tmp_path / "killed", *args), cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  marker = tmp_path / "killed" / "checkpoints" / str(half)
  deadline = time.time() + 300
  while not marker.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.005)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
  killed_losses = training_losses(tmp_path / "killed")
  assert max(killed_losses) < steps
  run_main(main_command(tmp_path / "killed", *args))  # resumes from the step-12 checkpoint
  straight = training_losses(tmp_path / "straight")
  resumed = training_losses(tmp_path / "killed")
  for s in range(1, steps + 1):
    assert resumed[s] == straight[s], (s, resumed[s], straight[s])  # bit-identical
  from unimo_jax.train.checkpoint import Checkpointer
  a = Checkpointer(tmp_path / "straight" / "checkpoints", every=1, keep=1).manager
  b = Checkpointer(tmp_path / "killed" / "checkpoints", every=1, keep=1).manager
  pa, pb = (m.restore(steps)["state"]["params"] for m in (a, b))
  for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  evals = json.loads((tmp_path / "straight" / "eval_metrics.json").read_text())
  assert 0.0 <= evals["i2t_R@1"] <= 1.0 and evals["pairs"] == 50


def test_checkpoint_restores_onto_another_mesh_and_init_from(config, tmp_path):
  from unimo_jax.train.checkpoint import Checkpointer, restore_params, save_params
  tx = make_optimizer(config)
  rules = rules_from_config(config.logical_axis_rules)
  _, state, _ = _train(config, {"data": 8}, steps=2)
  saved = jax.device_get(state)
  checkpoints = Checkpointer(tmp_path / "ckpt", every=1, keep=1, use_async=True)
  checkpoints.save(2, state, {"text": {"position": 7}}, force=True)
  checkpoints.close()
  mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abstract, shardings = state_shardings(config, tx, mesh, rules)
    restored, data_state = Checkpointer(tmp_path / "ckpt", every=1, keep=1).restore(
        abstract, shardings)
  assert data_state == {"text": {"position": 7}}
  kernel = restored["params"]["encoder"]["layer_0"]["ffn_fc_0"]["kernel"]
  assert kernel.sharding.spec == P("fsdp", "tensor") and len(kernel.sharding.device_set) == 8
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(saved)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  save_params(tmp_path / "params", saved["params"])
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    params = restore_params(tmp_path / "params", abstract["params"], shardings["params"])
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(saved["params"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(FileNotFoundError, match="expected a workdir, a step directory or a params"):
    restore_params(tmp_path / "missing", abstract["params"], shardings["params"])


def test_non_finite_loss_stops_with_a_message():
  from unimo_jax.train.metric_log import check_finite
  from unimo_jax.errors import NonFiniteLoss
  check_finite(3, {"total_loss": 1.5, "cmcl/loss": 0.2})
  with pytest.raises(NonFiniteLoss, match=r"step 7: non-finite loss nan .*'cmcl/loss'"):
    check_finite(7, {"total_loss": float("nan"), "cmcl/loss": float("inf"), "x": 1.0})


def test_init_from_unrolled_params_into_a_scanned_model(config, tmp_path):
  """Converted weights are unrolled (encoder/layer_i); a scanned model (the TPU presets) takes
  them stacked, value for value, and the other way round."""
  from unimo_jax.model.params import init_params, stack_layers
  from unimo_jax.train.checkpoint import restore_params, save_params
  unrolled = init_params(config.model, jax.random.key(3))
  save_params(tmp_path / "unrolled", unrolled)
  scanned_config = config.copy_and_resolve_references()
  scanned_config.model.scan_layers = True
  mesh = make_mesh({"data": 2, "fsdp": 4, "tensor": 1})
  rules = rules_from_config(config.logical_axis_rules)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abstract, shardings = state_shardings(scanned_config, make_optimizer(scanned_config), mesh,
                                          rules)
    restored = restore_params(tmp_path / "unrolled", abstract["params"], shardings["params"])
  expected = stack_layers(jax.device_get(unrolled), config.model.num_layers)
  assert jax.tree.structure(restored) == jax.tree.structure(expected)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  kernel = restored["encoder"]["layers"]["layer"]["ffn_fc_0"]["kernel"]
  assert kernel.shape[0] == config.model.num_layers and kernel.sharding.spec[1] == "fsdp"
  save_params(tmp_path / "scanned", jax.device_get(restored))
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abstract, shardings = state_shardings(config, make_optimizer(config), mesh, rules)
    back = restore_params(tmp_path / "scanned", abstract["params"], shardings["params"])
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(unrolled)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_init_from_a_workdir_with_another_pooling_stops_the_start(tmp_path):
  from unimo_jax.train.driver import start
  from unimo_jax.errors import ConfigError
  source = tmp_path / "pretrained"
  source.mkdir()
  stored = {"model": {"pooling": "mean"}}
  (source / "config.json").write_text(json.dumps(stored))
  config = pretrain_config()
  config.model.pooling = "first"  # UNIMO's (the tiny preset's default is 'mean')
  config.init_from = str(source)
  with pytest.raises(ConfigError, match=r"model.pooling: init_from .*pretrained was trained with "
                                        r"'mean', this run has 'first'; set "
                                        r"--config.model.pooling=mean"):
    start(config, tmp_path / "run", "train", read_data=False, verbose=False)
  config.model.pooling = "mean"  # agreeing: the check passes (the start goes on)
  start(config, tmp_path / "run", "train", read_data=False, verbose=False)
  # a config.json from before the field existed counts as 'first', UNIMO's pooling
  (source / "config.json").write_text(json.dumps({"model": {}}))
  with pytest.raises(ConfigError, match="trained with 'first', this run has 'mean'"):
    start(config, tmp_path / "run", "train", read_data=False, verbose=False)
