"""The full pretraining step of the base preset on this machine: steps/s, MFU, input wait.

  python benchmarks/train_step.py [--steps 5] [--warmup 2]

Mixed batch per step: 8 texts x 128 tokens (MLM + seq2seq), 8 images x 100 regions (MRM),
8 pairs x (100 regions + 40 tokens) (MLM, MRM, caption, CMCL with 2 extra positive texts, 2 hard
negatives and 1 retrieved image per pair), read through the real grain pipeline from shards in the
real layout. MFU = XLA's FLOP count of the compiled step / step time / this machine's fp32 matmul
peak, measured in the same run (2048 x 2048 matmuls). Input wait = time blocked in the iterator.
"""

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--preset", default="base")
  args = parser.parse_args()

  import flax.linen as nn
  import jax
  from data_pipeline import SPECIAL, VOCAB, write_data
  from unimo_jax.data.pipeline.examples import data_config
  from unimo_jax.data.pipeline.streams import make_pretraining_iterator, to_global_arrays
  from unimo_jax.parallel import batch_sharding, make_mesh, rules_from_config
  from unimo_jax.train.metric_log import measured_peak_flops
  from unimo_jax.train.optimizer import make_optimizer
  from unimo_jax.train.state import create_state, state_shardings
  from unimo_jax.train.step import jit_train_step
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
  from test_pretrain_loss import load_config

  config = load_config(args.preset, batch=8)
  config.data = data_config()
  config.data.max_text_length, config.data.max_caption_length = 128, 40
  peak = measured_peak_flops(size=2048, repeats=10)
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp)
    write_data(root, 100)
    d = config.data
    d.text_dir, d.image_dir, d.pair_dir = (str(root / k) for k in ("text", "image", "pair"))
    data = make_pretraining_iterator(d, {"text": 8, "image": 8, "pair": 8}, SPECIAL, VOCAB,
                                     process_index=0, process_count=1)
    mesh = make_mesh({"data": 1})
    rules = rules_from_config(config.logical_axis_rules)
    tx = make_optimizer(config)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      _, shardings = state_shardings(config, tx, mesh, rules)
      state = create_state(config, tx, shardings)
      first = next(data)
      step = jit_train_step(config, tx, mesh, shardings,
                            jax.tree.map(lambda x: batch_sharding(mesh, np.ndim(x)), first))
      start = time.perf_counter()
      compiled = step.lower(state, to_global_arrays(first, mesh)).compile()
      compile_seconds = time.perf_counter() - start
      cost = compiled.cost_analysis()
      flops = float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])
      times, waits = [], []
      for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        batch = next(data)
        waited = time.perf_counter() - start
        state, metrics = compiled(state, to_global_arrays(batch, mesh))
        jax.block_until_ready(metrics)
        if i >= args.warmup:
          times.append(time.perf_counter() - start)
          waits.append(waited)
  t = statistics.median(times)
  print(f"preset {args.preset}, jax {jax.__version__} on {jax.devices()[0].platform}; compile "
        f"{compile_seconds:.0f} s; median of {args.steps} steps after {args.warmup} warm-up")
  print(f"step {t:.2f} s = {1 / t:.3f} steps/s = {24 / t:.2f} examples/s")
  print(f"XLA FLOPs/step {flops / 1e9:.0f} G -> {flops / t / 1e9:.0f} GFLOP/s; measured fp32 "
        f"matmul peak {peak / 1e9:.0f} GFLOP/s; MFU {flops / t / peak:.1%}")
  print(f"input wait {statistics.median(waits) * 1e3:.1f} ms/step "
        f"({statistics.median(waits) / t:.2%} of the step)")


if __name__ == "__main__":
  main()
