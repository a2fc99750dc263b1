"""What VILLA costs per training step: the task's plain step against its VILLA step, same batch,
same run.

  python benchmarks/villa_step.py                                  # SNLI-VE, tiny model
  python benchmarks/villa_step.py --task caption --preset base --batch 4 --steps 2

Both steps are value_and_grad of the task's loss over all parameters (the optimizer update is the
same for both and left out), on a random batch of the config's shapes (Task.batch_spec), jitted
for this machine. VILLA settings: the config's task.adversarial (the base / large recipes:
UNIMO's 4 rounds of clean + text + image branches). Prints the median step time, XLA's FLOP count
of each compiled step and the ratios.
"""

import argparse
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))


def random_batch(spec, vocab, rng):
  def fill(path, s):
    name = str(getattr(path[-1], "key", path[-1]))
    if np.issubdtype(s.dtype, np.floating):
      return rng.uniform(size=s.shape).astype(s.dtype)
    if s.dtype == np.bool_:
      return np.ones(s.shape, bool)
    if name in ("lm_positions",):
      return np.broadcast_to(np.arange(s.shape[-1], dtype=s.dtype), s.shape).copy()
    high = 3 if name in ("label", "role_ids", "turn_ids") else vocab
    return rng.integers(2 if high == vocab else 0, high, size=s.shape).astype(s.dtype)
  import jax
  return jax.tree_util.tree_map_with_path(fill, spec)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--task", default="snli_ve", choices=("snli_ve", "caption"))
  parser.add_argument("--preset", default="tiny")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--steps", type=int, default=3)
  args = parser.parse_args()

  import jax
  from timing import median_seconds
  from train_helpers import config_from_file
  from unimo_jax.data.formats.tokenizers import ShapeOnlyTokenizer
  from unimo_jax.model.params import strip_boxes
  from unimo_jax.tasks.registry import make_task

  rows = {}
  for mode in ("none", "villa"):
    config = config_from_file(args.task, args.preset)
    config.batch_size = args.batch
    config.task.adversarial.type = mode
    task = make_task(config, "/tmp/villa_benchmark", data_paths={},
                     tokenizer=ShapeOnlyTokenizer(config.model.vocab_size))
    params = strip_boxes(jax.jit(task.boxed_params)(jax.random.key(0)))
    batch = random_batch(task.batch_spec(), config.model.vocab_size, np.random.default_rng(0))
    step = jax.jit(jax.value_and_grad(lambda p, b, r: task.loss(p, b, r)[0]))
    compiled = step.lower(params, batch, jax.random.key(1)).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    seconds = median_seconds(lambda: compiled(params, batch, jax.random.key(1)), args.steps)
    rows[mode] = (seconds, float((cost or {}).get("flops", float("nan"))))
    print(f"{args.task} {args.preset} batch {args.batch} adversarial={mode}: "
          f"{seconds * 1e3:.1f} ms per step, XLA {rows[mode][1] / 1e9:.2f} GFLOP", flush=True)
  (plain, plain_flops), (villa, villa_flops) = rows["none"], rows["villa"]
  settings = config.task.adversarial
  print(f"VILLA ({settings.steps} rounds, clean branch {settings.clean_branch}) / plain: "
        f"time x{villa / plain:.2f}, FLOPs x{villa_flops / plain_flops:.2f} "
        f"({jax.devices()[0].platform}, {jax.device_count()} device(s))")


if __name__ == "__main__":
  main()
