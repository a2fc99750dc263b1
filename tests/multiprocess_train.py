"""Trains 3 steps of the tiny preset on a fixed random global batch; prints the losses as JSON.

  python tests/multiprocess_train.py OUT.json                       # one process, 4 devices
  python tests/multiprocess_train.py OUT.json ADDRESS NPROC PID     # jax.distributed, 2 devices each
Each process feeds only its rows of the global batch (make_array_from_process_local_data).
"""

import json
import sys

import jax

if len(sys.argv) > 2:
  jax.config.update("jax_num_cpu_devices", 2)
  jax.distributed.initialize(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                             initialization_timeout=60)
else:
  jax.config.update("jax_num_cpu_devices", 4)

import flax.linen as nn  # noqa: E402
import numpy as np  # noqa: E402

from train_helpers import pretrain_config  # noqa: E402
from unimo_jax.data.pipeline.streams import to_global_arrays  # noqa: E402
from unimo_jax.parallel import batch_sharding, make_mesh, rules_from_config  # noqa: E402
from unimo_jax.data.synthetic.random_batch import random_pretraining_batch  # noqa: E402
from unimo_jax.train.optimizer import make_optimizer  # noqa: E402
from unimo_jax.train.state import create_state, state_shardings  # noqa: E402
from unimo_jax.train.step import jit_train_step  # noqa: E402


def main():
  config = pretrain_config("tiny", batch=8)
  config.optimizer.warmup_steps = 1
  mesh = make_mesh({"data": -1})
  rules = rules_from_config(config.logical_axis_rules)
  tx = make_optimizer(config)
  full = random_pretraining_batch(config, seed=5)
  n, i = jax.process_count(), jax.process_index()
  local = jax.tree.map(lambda x: x[i * len(x) // n:(i + 1) * len(x) // n], full)
  losses = []
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    _, shardings = state_shardings(config, tx, mesh, rules)
    state = create_state(config, tx, shardings)
    batch = to_global_arrays(local, mesh)
    step = jit_train_step(config, tx, mesh, shardings,
                          jax.tree.map(lambda x: batch_sharding(mesh, np.ndim(x)), full))
    for _ in range(3):
      state, metrics = step(state, batch)
      losses.append(float(metrics["total_loss"]))
  if i == 0:
    with open(sys.argv[1], "w") as f:
      json.dump({"losses": losses, "processes": n, "devices": jax.device_count()}, f)
  if n > 1:
    jax.distributed.shutdown()


if __name__ == "__main__":
  main()
