"""Forward+backward speed of the UNIMO encoder vs transformers' RobertaModel, same shapes, same run.

  python benchmarks/model_step.py                  # base preset, text and pair inputs
  python benchmarks/model_step.py --steps 5 --preset tiny

Workloads (fp32, dropout off, loss = mean(h^2) over the encoder output, as in the env probe):
  text:  batch 8 x 128 tokens;
  pairs: batch 8 x ([IMG] + 100 regions + 40 tokens) = 141 positions. transformers has no region
         input, so its same-shape reference is RobertaModel over 141 tokens.
Reports the median step time over --steps timed steps (after --warmup untimed ones), steps/s,
achieved FLOP/s (model FLOPs = 3 x forward matmul FLOPs, counted analytically and also by XLA's
cost analysis for the JAX program), and the JAX / torch speed ratio.
"""

import argparse
import statistics
import time

import numpy as np


def encoder_flops(config, batch, length):
  """Forward+backward matmul FLOPs of the transformer layers (3 x forward)."""
  h, mlp, layers = config.hidden_size, config.mlp_dim, config.num_layers
  per_token = 2 * (4 * h * h + 2 * h * mlp) + 2 * 2 * length * h  # projections, FFN, QK^T and PV
  return 3 * layers * per_token * batch * length


def time_steps(step, warmup, steps):
  for _ in range(warmup):
    step()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def jax_step(config, batch):
  import jax
  import jax.numpy as jnp
  from unimo_jax.model import Unimo, init_params
  params = init_params(config, jax.random.key(0))
  model = Unimo(config)

  def loss(p, b):
    return jnp.mean(model.apply({"params": p}, b, heads=frozenset())["hidden"] ** 2)

  grad = jax.jit(jax.grad(loss))
  compiled = grad.lower(params, batch).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  xla_flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
  return (lambda: jax.block_until_ready(compiled(params, batch))), xla_flops


def torch_step(config, batch_size, length):
  import torch
  import transformers
  cfg = transformers.RobertaConfig(
      vocab_size=config.vocab_size, hidden_size=config.hidden_size,
      num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
      intermediate_size=config.mlp_dim, max_position_embeddings=max(config.max_position_embeddings,
                                                                    length + 2),
      type_vocab_size=1, layer_norm_eps=config.layer_norm_eps, hidden_dropout_prob=0.0,
      attention_probs_dropout_prob=0.0)
  cfg._attn_implementation = "sdpa"
  model = transformers.RobertaModel(cfg, add_pooling_layer=False).train()
  ids = torch.randint(4, config.vocab_size, (batch_size, length))

  def step():
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids).last_hidden_state
    (out ** 2).mean().backward()
  return step


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default="base")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--skip-torch", action="store_true")
  args = parser.parse_args()

  import jax
  from unimo_jax.model import model_config
  from unimo_jax.data.synthetic.random_batch import random_regions, random_text
  config = model_config(args.preset)
  config.dropout_rate = config.attention_dropout_rate = 0.0
  rng = np.random.default_rng(0)
  b = args.batch
  workloads = {
      "text (8 x 128 tokens)": ({"input_ids": random_text(config, rng, b, 128)}, 128),
      "pairs (8 x 100 regions + 40 tokens)": (
          dict(random_regions(config, rng, b, 100), input_ids=random_text(config, rng, b, 40)),
          141),
  }
  print(f"preset {args.preset}: {config.num_layers} layers, hidden {config.hidden_size}; "
        f"jax {jax.__version__} on {jax.devices()[0].platform}; median of {args.steps} steps")
  header = (f"{'workload':<38}{'impl':<8}{'s/step':>9}{'steps/s':>9}{'GFLOP/s':>9}"
            f"{'XLA GFLOP':>11}{'ratio':>7}")
  print(header)
  for name, (batch, length) in workloads.items():
    flops = encoder_flops(config, b, length)
    step, xla_flops = jax_step(config, batch)
    t_jax = time_steps(step, args.warmup, args.steps)
    print(f"{name:<38}{'jax':<8}{t_jax:>9.3f}{1 / t_jax:>9.3f}{flops / t_jax / 1e9:>9.1f}"
          f"{xla_flops / 1e9:>11.1f}{'':>7}", flush=True)
    if args.skip_torch:
      continue
    t_torch = time_steps(torch_step(config, b, length), args.warmup, args.steps)
    print(f"{'':<38}{'torch':<8}{t_torch:>9.3f}{1 / t_torch:>9.3f}{flops / t_torch / 1e9:>9.1f}"
          f"{'':>11}{t_torch / t_jax:>6.2f}x", flush=True)


if __name__ == "__main__":
  main()
