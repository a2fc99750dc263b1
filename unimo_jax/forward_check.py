"""One sharded forward pass of every pretraining objective on a random batch.

The main job until the training loop exists: it builds the mesh from the config, creates the
parameters directly sharded, evaluates the full pretraining loss on a random mixed batch, prints
the parameter table and every loss term, and writes config.json and forward_metrics.json to the
workdir.
"""

import json
import pathlib
import time

import flax.linen as nn
import jax
import numpy as np

from unimo_jax.model import count_params
from unimo_jax.model.params import abstract_params, init_boxed_params, strip_boxes
from unimo_jax.parallel import batch_sharding, logical_to_sharding, make_mesh, rules_from_config
from unimo_jax.pretrain_loss import pretraining_loss
from unimo_jax.random_batch import random_pretraining_batch


def parameter_table(abstract, shardings) -> str:
  """One line per top-level parameter group: scalar count and the sharding of its largest leaf."""
  lines = [f"{'group':<22}{'parameters':>14}  largest leaf sharding"]
  params = strip_boxes(abstract)
  for group in sorted(params):
    leaves = jax.tree.leaves(params[group])
    specs = jax.tree.leaves(shardings[group], is_leaf=lambda s: hasattr(s, "spec"))
    biggest = max(range(len(leaves)), key=lambda i: np.prod(leaves[i].shape))
    lines.append(f"{group:<22}{count_params(params[group]):>14,}  "
                 f"{tuple(leaves[biggest].shape)} {specs[biggest].spec}")
  lines.append(f"{'total':<22}{count_params(params):>14,}")
  return "\n".join(lines)


def run(config, workdir) -> dict:
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  mesh = make_mesh(config.mesh)
  rules = rules_from_config(config.logical_axis_rules)
  print(f"mesh {dict(mesh.shape)} on {jax.device_count()} {jax.devices()[0].platform} device(s)")
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abstract = abstract_params(config.model)
    shardings = logical_to_sharding(abstract, mesh, rules)
    print(parameter_table(abstract, shardings))
    init = jax.jit(lambda key: nn.unbox(init_boxed_params(config.model, key)),
                   out_shardings=shardings)
    params = {"params": init(jax.random.key(config.seed))}
    host_batch = random_pretraining_batch(config, seed=config.seed)
    batch = jax.tree.map(lambda x: jax.device_put(x, batch_sharding(mesh, np.ndim(x))), host_batch)
    loss_fn = jax.jit(lambda p, b: pretraining_loss(p, b, config, mesh=mesh))
    start = time.perf_counter()
    total, metrics = jax.block_until_ready(loss_fn(params, batch))
    seconds = time.perf_counter() - start
  metrics = {k: float(v) for k, v in sorted(metrics.items())}
  for key, value in metrics.items():
    print(f"  {key:<36}{value:>12.4f}")
  print(f"total loss {float(total):.4f}; compiled and ran in {seconds:.1f} s")
  if not np.isfinite(float(total)):
    raise FloatingPointError(f"non-finite pretraining loss {float(total)}")
  (workdir / "forward_metrics.json").write_text(json.dumps(metrics, indent=2))
  return metrics
