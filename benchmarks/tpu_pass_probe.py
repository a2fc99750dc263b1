"""Where one chip's time goes in a base-width pass: the TPU cost model's estimates (not
measurements) for one encoder layer, its attention, the LM head and the region heads, each
forward + backward on a single abstract v5e chip (libtpu's compile-only client; no TPU, no
collectives).

  python benchmarks/tpu_pass_probe.py [--rows 32 --length 141]
      [--only layer,attention,lm_head,region_heads,pallas_pricing] [--variant TEXT]

Rows x length default to what one v5e-16 chip holds of base pretraining's image-caption pairs
(512 pairs / 16 chips, 101 region slots + 40 caption tokens). Each line is a variant of the same
program with its estimated time, bytes accessed, and the MFU its matmul FLOPs would give; each
compile takes under two minutes on 2 cores.

- layer: unimo_jax.model.transformer.Encoder, 1 layer, base width, bfloat16, full remat, with
  dropout 0.1; without dropout; with the dropout masks drawn 16 bits per element instead of 32
  (a what-if module swap, here only); without remat; without either; and with the other remat
  policies (model.remat 'dots', 'attention', 'dots_attention'), and with what-if policies that
  keep some of the layer's named tensors ('keep query+key+value+context': the
  `checkpoint_name`s of model/transformer.py and of layers.py's softmax, registered for this
  compile only).
- attention: softmax(q k^T + mask bias) v as the model computes it (masks.py's bias), against the Pallas TPU flash
  attention kernel (jax.experimental.pallas.ops.tpu), which needs lengths divisible by its
  128-wide blocks and has no attention dropout, so it runs at the length padded to 256. Its
  figure is not an estimate of the kernel (see pallas_pricing): its forward kernel is priced by
  the cost it declares, its backward kernels, which declare none, at zero.
- lm_head: tied logits x E^T + b and the cross-entropy over the 50,265 words for rows x length
  positions, as the model computes them (bfloat16 matmul output, float32 log-softmax); with float32
  matmul output; with the loss written as logsumexp - logit[label]; with the vocabulary padded to a
  multiple of 128 and the padding words masked.
- region_heads: masked-region prediction (model/heads.py's RegionHeads, then
  objectives/regions.py's regression + KL loss) over `--rows` images of 100 regions, as the model
  computes them (every region, the loss masked to the masked ones); with the 1,601 classes padded
  to 1,664 (a multiple of 128; padding logits at -1e9, soft labels 0); and on the masked regions
  only, gathered first (15 of 100 per image, what the anchors alone give: a lower bound).
- pallas_pricing: how the cost model prices a Pallas TPU kernel, here one that doubles a
  [1024, 1024] float32 array (8 MiB moved): with no `pl.CostEstimate` alone (unpriceable), then
  followed by an XLA add (one kernel or three: the add's price only, the kernels at zero), and
  with the true traffic, 1e12 FLOPs or 8 GiB declared: the estimate follows the declaration, so
  a custom kernel's estimated time is what its author declares, and zero where it declares none.
"""

import argparse
import json
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from unimo_jax.compile import analysis, topology
from unimo_jax.model import transformer
from unimo_jax.model.heads import RegionHeads
from unimo_jax.model.masks import allowed_attention, attention_bias
from unimo_jax.model.presets import model_config
from unimo_jax.objectives.regions import mrm_loss

HIDDEN, MLP, HEADS, VOCAB = 768, 3072, 12, 50265


def one_chip_mesh():
  slice_ = topology.parse_slice("v5e-1")
  return Mesh(np.array(topology.abstract_devices(slice_)).reshape(1), ("chip",)), slice_.chip


def struct(mesh, shape, dtype):
  return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, P()))


def module_params(mesh, module, *inputs):
  """The module's parameters initialised on `inputs` (structs), as structs on the mesh."""
  rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
  params = jax.eval_shape(lambda: nn.unbox(module.init(
      rngs, *[jnp.zeros(x.shape, x.dtype) for x in inputs])))
  return jax.tree.map(lambda a: struct(mesh, a.shape, a.dtype), params)


def estimate(fn, args, matmul_flops, chip) -> dict:
  compiled = jax.jit(fn).lower(*args).compile()
  cost = analysis.cost(compiled)
  seconds = cost["estimated_seconds"]
  return {"ms": round(seconds * 1e3, 3), "bytes_GB": round(cost["bytes_accessed"] / 1e9, 3),
          "mfu": round(matmul_flops / seconds / chip.peak_bf16_flops, 3)}


class Dropout16(nn.Module):
  """Dropout keeping x / (1 - rate) where a 16-bit draw >= rate * 2^16 (rate exact to 2e-5)."""
  rate: float

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    if deterministic or self.rate == 0:
      return x
    bits = jax.random.bits(self.make_rng("dropout"), x.shape, jnp.uint16)
    keep = bits >= jnp.asarray(round(self.rate * 2 ** 16), jnp.uint16)
    return jnp.where(keep, x / (1.0 - self.rate), 0).astype(x.dtype)


def layer_variant(mesh, chip, rows, length, variant):
  config = model_config("base")
  config.dtype, config.num_layers, config.scan_layers, config.remat = "bfloat16", 1, False, "full"
  if "no dropout" in variant:
    config.dropout_rate = config.attention_dropout_rate = 0.0
  if variant.startswith("no remat"):
    config.remat = "none"
  if variant.startswith("remat "):  # another policy of transformer.REMAT_POLICIES
    config.remat = variant.split()[1]
  what_if = variant.startswith("keep ")  # a policy keeping the layer's named tensors listed
  if what_if:
    names = variant.split()[1].split("+")
    transformer.REMAT_POLICIES["what-if"] = jax.checkpoint_policies.save_only_these_names(*names)
    config.remat = "what-if"
  encoder = transformer.Encoder(config, deterministic=False)
  x = struct(mesh, (rows, length, HIDDEN), jnp.bfloat16)
  bias = struct(mesh, (rows, 1, length, length), jnp.float32)
  params = module_params(mesh, encoder, x, bias)
  key = struct(mesh, (), jax.random.key(0).dtype)

  def step(params, x, bias, key):
    def loss(p, x):
      return jnp.sum(encoder.apply(p, x, bias, rngs={"dropout": key}).astype(jnp.float32) ** 2)
    return jax.grad(loss, argnums=(0, 1))(params, x)

  tokens = rows * length
  flops = 3 * 2 * tokens * (4 * HIDDEN * HIDDEN + 2 * HIDDEN * MLP) + 3 * 4 * tokens * length * HIDDEN
  # the what-if swaps flax's Dropout class, which the layer looks up when it runs, for this
  # compile only
  original = transformer.nn.Dropout
  if variant == "16-bit dropout draws":
    transformer.nn.Dropout = Dropout16
  try:
    return estimate(step, (params, x, bias, key), flops, chip)
  finally:
    transformer.nn.Dropout = original
    transformer.REMAT_POLICIES.pop("what-if", None)


def attention_variant(mesh, chip, rows, length, variant):
  head_dim = HIDDEN // HEADS
  # matmul FLOPs of the real length: the Pallas variant's padding is work, not model FLOPs
  flops = 3 * 4 * rows * HEADS * length * length * head_dim
  if variant == "pallas flash (length 256)":
    from jax.experimental.pallas.ops.tpu import flash_attention as flash
    length = -(-length // 128) * 128

    def attend(q, k, v, valid):
      ids = flash.SegmentIds(q=valid, kv=valid)
      return flash.flash_attention(q, k, v, segment_ids=ids, sm_scale=1.0)
  else:
    def attend(q, k, v, valid):  # the model's: an additive [rows, 1, q, k] float32 mask bias
      bias = attention_bias(allowed_attention("bidirectional", valid > 0))
      scores = jnp.einsum("bhqd,bhkd->bhqk", q, k).astype(jnp.float32) + bias
      return jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(scores, -1).astype(v.dtype), v)

  def step(q, k, v, valid):
    loss = lambda q, k, v: jnp.sum(attend(q, k, v, valid).astype(jnp.float32) ** 2)
    return jax.grad(loss, argnums=(0, 1, 2))(q, k, v)

  qkv = struct(mesh, (rows, HEADS, length, head_dim), jnp.bfloat16)
  return estimate(step, (qkv, qkv, qkv, struct(mesh, (rows, length), jnp.int32)), flops, chip)


def lm_head_variant(mesh, chip, rows, length, variant):
  positions = rows * length
  vocab = -(-VOCAB // 128) * 128 if variant.startswith("vocabulary padded") else VOCAB

  def logits_of(x, table, bias):
    if variant == "float32 matmul output":
      out = jnp.einsum("rh,vh->rv", x, table.astype(jnp.bfloat16),
                       preferred_element_type=jnp.float32)
    else:
      out = jnp.einsum("rh,vh->rv", x, table.astype(jnp.bfloat16)).astype(jnp.float32)
    out = out + bias  # [positions, vocab]
    if vocab != VOCAB:  # the padding words are never predicted
      out = jnp.where(jnp.arange(vocab) < VOCAB, out, -1e9)
    return out

  def loss(x, table, bias, labels):
    logits = logits_of(x, table, bias)
    if variant == "logsumexp - logit":
      nll = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, labels[:, None], -1)[:, 0]
    else:
      logp = jax.nn.log_softmax(logits, -1)
      nll = -jnp.take_along_axis(logp, labels[:, None], -1)[:, 0]
    return nll.mean()

  def step(x, table, bias, labels):
    return jax.grad(loss, argnums=(0, 1, 2))(x, table, bias, labels)

  args = (struct(mesh, (positions, HIDDEN), jnp.bfloat16), struct(mesh, (vocab, HIDDEN), jnp.float32),
          struct(mesh, (vocab,), jnp.float32), struct(mesh, (positions,), jnp.int32))
  return estimate(step, args, 3 * 2 * positions * HIDDEN * VOCAB, chip)


def region_heads_variant(mesh, chip, rows, length, variant):
  config = model_config("base")
  config.dtype = "bfloat16"
  regions = 15 if variant.startswith("masked") else 100
  real = config.num_region_classes  # 1,601
  classes = -(-real // 128) * 128 if variant.startswith("classes padded") else real
  config.num_region_classes = classes
  heads = RegionHeads(config)
  x = struct(mesh, (rows, regions, HIDDEN), jnp.bfloat16)
  params = module_params(mesh, heads, x)
  per_region = {"mrm_mask": (), "region_target_features": (config.region_feature_dim,),
                "region_soft_labels": (classes,)}
  batch = {k: struct(mesh, (rows, regions) + tail, jnp.float32) for k, tail in per_region.items()}

  def loss(p, x, batch):
    features, logits = heads.apply(p, x)
    if classes != real:  # the padding classes are never predicted
      logits = jnp.where(jnp.arange(classes) < real, logits, -1e9)
    outputs = {"region_feature_pred": features, "region_class_logits": logits}
    return mrm_loss(outputs, batch)[0]

  def step(p, x, batch):
    return jax.grad(loss, argnums=(0, 1))(p, x, batch)

  width = HIDDEN + config.region_feature_dim + real  # the heads' output features per region
  return estimate(step, (params, x, batch), 3 * 2 * rows * regions * HIDDEN * width, chip)


def pallas_pricing_variant(mesh, chip, rows, length, variant):
  from jax.experimental import pallas as pl
  declared = {"no cost estimate": None, "no cost estimate, then an add": None,
              "three undeclared kernels, then an add": None,
              "8 MiB declared (the truth)": pl.CostEstimate(
                  flops=0, transcendentals=0, bytes_accessed=8 * 2 ** 20),
              "1e12 FLOPs declared": pl.CostEstimate(
                  flops=10 ** 12, transcendentals=0, bytes_accessed=8 * 2 ** 20),
              "8 GiB declared": pl.CostEstimate(
                  flops=0, transcendentals=0, bytes_accessed=8 * 2 ** 30)}[variant]

  def double(x_ref, o_ref):
    o_ref[...] = x_ref[...] * 2.0

  kernels = 3 if variant.startswith("three") else 1

  def step(x):
    for _ in range(kernels):
      x = pl.pallas_call(double, out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
                         cost_estimate=declared)(x)
    return x + 1.0 if "add" in variant else x

  return estimate(step, (struct(mesh, (1024, 1024), jnp.float32),), 0, chip)


PROBES = {
    "layer": (layer_variant, ("dropout 0.1 (the base preset)", "no dropout",
                              "16-bit dropout draws", "no remat",
                              "no remat, no dropout", "remat dots", "remat attention",
                              "remat dots_attention", "keep query+key", "keep query+key+value",
                              "keep query+key+value+context", "keep ffn_hidden",
                              "keep ffn_hidden+attention_weights", "keep ffn_hidden+context")),
    "attention": (attention_variant, ("xla (the model's)", "pallas flash (length 256)")),
    "lm_head": (lm_head_variant, ("bfloat16 matmul output (the model's)", "float32 matmul output",
                                  "logsumexp - logit",
                                  "vocabulary padded to 50,304 (masked)")),
    "region_heads": (region_heads_variant, ("all regions (the model's)",
                                            "classes padded to 1,664 (masked)",
                                            "masked regions only (15 of 100, gathered)")),
    "pallas_pricing": (pallas_pricing_variant, ("no cost estimate", "no cost estimate, then an add",
                                                "three undeclared kernels, then an add",
                                                "8 MiB declared (the truth)",
                                                "1e12 FLOPs declared", "8 GiB declared")),
}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rows", type=int, default=32)
  parser.add_argument("--length", type=int, default=141)
  parser.add_argument("--only", default=",".join(PROBES))
  parser.add_argument("--variant", default="", help="run only the variants containing this text")
  args = parser.parse_args(argv)
  mesh, chip = one_chip_mesh()
  print(f"one abstract {chip.generation} chip ({chip.peak_bf16_flops / 1e12:.0f} TFLOP/s bf16, "
        f"{chip.hbm_bandwidth / 1e9:.0f} GB/s); rows {args.rows} x length {args.length}; "
        "estimates of XLA's TPU cost model", flush=True)
  for name in args.only.split(","):
    fn, variants = PROBES[name]
    for variant in (v for v in variants if args.variant in v):
      try:
        row = fn(mesh, chip, args.rows, args.length, variant)
      except Exception as e:  # a variant libtpu cannot compile is reported, not fatal
        row = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
      print(json.dumps({"probe": name, "variant": variant, **row}), flush=True)


if __name__ == "__main__":
  sys.exit(main())
