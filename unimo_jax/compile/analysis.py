"""What a compiled program costs per chip, read from XLA: memory (memory_analysis), FLOPs,
bytes accessed and the TPU compiler's runtime estimate (cost_analysis: 'optimal_seconds', an
estimate of XLA's TPU cost model, not a measurement), and the collectives in its partitioned
HLO. Plus the model's own matmul FLOPs, counted on the jaxpr, and the per-layer extrapolation
that scanned layers need (cost_analysis counts a while-loop body once).
"""

import re

import jax
import jax.extend
import numpy as np
from jax.interpreters import partial_eval as pe

COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
                "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
_SHAPE = re.compile(r"\b(pred|[suf]\d+|bf16|c64|c128)\[([\d,]*)\]")
_OP = re.compile(r"=\s*(.*?)\s(" + "|".join(COLLECTIVES) + r")(-start)?\(")


def shard_bytes(struct) -> int:
  """Bytes of one device's shard of a ShapeDtypeStruct / jax.Array with a sharding."""
  shape = struct.sharding.shard_shape(struct.shape) if struct.sharding is not None else struct.shape
  return int(np.prod(shape, dtype=np.int64)) * np.dtype(struct.dtype).itemsize


def tree_shard_bytes(tree) -> int:
  return sum(shard_bytes(x) for x in jax.tree.leaves(tree))


def memory(compiled) -> dict:
  """Per-chip bytes of the compiled program: arguments, outputs not aliased to arguments,
  temporaries and generated code; 'total' is their sum (what must fit in HBM)."""
  m = compiled.memory_analysis()
  out = {"arguments": int(m.argument_size_in_bytes),
         "outputs": int(m.output_size_in_bytes - m.alias_size_in_bytes),
         "temporaries": int(m.temp_size_in_bytes),
         "code": int(m.generated_code_size_in_bytes)}
  out["total"] = sum(out.values())
  return out


# Compiler-inserted custom calls that the TPU cost model cannot price: each adds exactly -1 s to
# 'optimal_seconds' (measured: a 1-layer base-width step with 36 ConcatBitcasts gave -35.99794,
# one with 73 X64Combines -72.97056, and programs without them a positive estimate). Both are
# data-movement-free: ConcatBitcast joins weight slices already prefetched in place, X64Combine
# pairs the two 32-bit halves of a 64-bit value. They are priced at 0.
UNPRICED_CUSTOM_CALLS = ("ConcatBitcast", "X64Combine")
_CUSTOM_CALL = re.compile(r'custom_call_target="([^"]+)"')


# A while loop of the program itself (a scan over layers, a decode loop), as opposed to the
# loops XLA makes for collective matmuls (windowed_dot_general): cost_analysis counts its body
# once, whatever the trip count.
_PROGRAM_LOOP = re.compile(r' while\(.*op_name="[^"]*/while"')


# XLA's RngBitGenerator (the 'rbg' PRNG's draws). Without libtpu's
# xla_tpu_spmd_rng_bit_generator_unsafe the SPMD partitioner does not split it: every chip draws
# the global shape and keeps its slice (seen in the base step: u32[512, 12, 141, 141] per chip
# for the attention dropout of 32 local pairs).
_RNG_BIT_GENERATOR = re.compile(r"=\s*(.*?)\srng-bit-generator\(")


def random_bits_bytes(hlo_text: str) -> int:
  """Bytes of random bits the program's RngBitGenerator ops write per chip (a tuple result's
  first element, the generator state, left out)."""
  total = 0
  for shapes in _RNG_BIT_GENERATOR.findall(hlo_text):
    found = _SHAPE.findall(shapes)
    total += _found_bytes(found[1:] if shapes.startswith("(") else found)
  return total


def cost(compiled, hlo_text: str | None = None) -> dict:
  """XLA's per-chip cost analysis: flops, bytes accessed, and the TPU cost model's estimated
  seconds with the unpriced custom calls priced at 0. 'loops' counts the program's own while
  loops, whose bodies these figures count once; 'random_bits_bytes' is what its RngBitGenerator
  ops write per chip."""
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else (analysis or {})
  text = compiled.as_text() if hlo_text is None else hlo_text
  targets = _CUSTOM_CALL.findall(text)
  unpriced = sum(targets.count(t) for t in UNPRICED_CUSTOM_CALLS)
  seconds = float(analysis.get("optimal_seconds", float("nan"))) + unpriced
  if not seconds > 0:  # an op the model cannot price, beyond the known ones
    seconds = float("nan")
  return {"flops": float(analysis.get("flops", 0.0)),
          "bytes_accessed": float(analysis.get("bytes accessed", 0.0)),
          "estimated_seconds": seconds, "unpriced_ops_priced_at_zero": float(unpriced),
          "loops": float(len(_PROGRAM_LOOP.findall(text))),
          "random_bits_bytes": float(random_bits_bytes(text))}


def _found_bytes(found) -> int:
  """Bytes of _SHAPE matches: [(dtype, 'd0,d1,...')]."""
  total = 0
  for dtype, dims in found:
    size = int(np.prod([int(d) for d in dims.split(",") if d], dtype=np.int64)) if dims else 1
    total += size * _DTYPE_BYTES.get(dtype, 4)
  return total


def collectives(hlo_text: str) -> dict:
  """{kind: {'count', 'bytes'}} of the collectives in partitioned HLO text (asynchronous
  '-start' ops counted once, by their result shapes; a '-start' tuple also carries its operand,
  so only the last shape of such a tuple is counted)."""
  out = {kind: {"count": 0, "bytes": 0} for kind in COLLECTIVES}
  for line in hlo_text.splitlines():
    match = _OP.search(line)
    if not match:
      continue
    shapes, kind, start = match.group(1), match.group(2), match.group(3)
    found = _SHAPE.findall(shapes)
    if start and shapes.startswith("("):
      found = found[-1:]
    out[kind]["count"] += 1
    out[kind]["bytes"] += _found_bytes(found)
  return out


def program_report(compiled) -> dict:
  """Memory, cost and collectives of one compiled program (per chip)."""
  text = compiled.as_text()
  return {"memory": memory(compiled), "cost": cost(compiled, text),
          "collectives": collectives(text)}


def _line(counts, values) -> tuple[float, float]:
  """(intercept, slope) of the least-squares line through (counts[i], values[i])."""
  n, x = np.asarray(counts, np.float64), np.asarray(values, np.float64)
  slope = np.sum((n - n.mean()) * (x - x.mean())) / np.sum((n - n.mean()) ** 2)
  return float(x.mean() - slope * n.mean()), float(slope)


def extrapolate(points: dict, layers: int) -> dict:
  """A per-step figure of an L-layer model from the same model compiled with a few layer counts
  ({count: figures}): every number becomes the least-squares line through its values at those
  counts, read at L (nested dicts alike). With counts 1 and 2 that is x1 + (L - 1) * (x2 - x1)."""
  counts = sorted(points)
  first = points[counts[0]]
  if isinstance(first, dict):
    return {k: extrapolate({n: points[n][k] for n in counts}, layers) for k in first}
  intercept, slope = _line(counts, [points[n] for n in counts])
  return intercept + slope * layers


def per_layer_slope(points: dict) -> float:
  """What one more layer adds to a number ({count: value}): the slope of its least-squares line."""
  counts = sorted(points)
  return _line(counts, [points[n] for n in counts])[1]


def line_residual(points: dict) -> float:
  """How far values ({count: value}) lie from their least-squares line: the largest deviation as
  a fraction of the value (0 for two counts, which a line always passes through)."""
  counts = sorted(points)
  intercept, slope = _line(counts, [points[n] for n in counts])
  return max(abs(points[n] - intercept - slope * n) / (abs(points[n]) or 1.0) for n in counts)


LINE_TOLERANCE = 0.05  # the per-layer estimate's tested accuracy (scanned against unrolled)


def per_layer_increment(seconds: float, flops: float, peak_flops: float,
                        residual: float = 0.0) -> dict:
  """What one more layer adds to a step (the per-layer slope of the unrolled compiles' estimated
  seconds and FLOPs per chip), and the rate that implies against the chip's peak. A rate above 1
  is physically impossible: the cost model's estimates of the programs then do not follow their
  work (seen on the VILLA steps, whose 12-layer estimate multiplies that error by 11), and the
  extrapolated step time is optimistic. residual: line_residual of the estimated seconds; with
  three or more layer counts, above LINE_TOLERANCE the estimates do not lie on a line."""
  rate = flops / (seconds * peak_flops) if seconds > 0 else float("inf")
  return {"seconds": seconds, "flops": flops, "fraction_of_peak": rate,
          "plausible": bool(rate <= 1.0), "line_residual": residual,
          "linear": bool(residual <= LINE_TOLERANCE)}


# ---- the model's FLOPs ------------------------------------------------------------------------

def _dot_flops(eqn) -> float:
  (lhs_contract, _), _ = eqn.params["dimension_numbers"]
  lhs = eqn.invars[0].aval.shape
  out = eqn.outvars[0].aval.shape
  return 2.0 * float(np.prod(out, dtype=np.float64)) * float(
      np.prod([lhs[d] for d in lhs_contract], dtype=np.float64))


def _sub_jaxprs(value):
  if isinstance(value, jax.extend.core.ClosedJaxpr):
    yield value.jaxpr
  elif isinstance(value, jax.extend.core.Jaxpr):
    yield value
  elif isinstance(value, (tuple, list)):
    for v in value:
      yield from _sub_jaxprs(v)


def _repeats(eqn) -> int:
  """How many times an equation runs its sub-jaxprs: a scan's length; a shard_map's body once
  per device of the axes it makes manual (the body's shapes are one device's)."""
  if eqn.primitive.name == "scan":
    return int(eqn.params["length"])
  if eqn.primitive.name == "shard_map":
    mesh = eqn.params["mesh"]
    return int(np.prod([mesh.shape[a] for a in eqn.params["newly_manual_axes"]], dtype=np.int64))
  return 1


def jaxpr_matmul_flops(jaxpr) -> float:
  """2 * M * N * K of every dot_general, scans counted `length` times, shard_map bodies once per
  device, conditionals by their costliest branch, while loops once (their trip count is not
  static)."""
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      total += _dot_flops(eqn)
      continue
    if name == "cond":
      total += max(jaxpr_matmul_flops(b.jaxpr) for b in eqn.params["branches"])
      continue
    inner = sum(jaxpr_matmul_flops(j) for v in eqn.params.values() for j in _sub_jaxprs(v))
    total += inner * _repeats(eqn)
  return total


def matmul_flops(fn, *args) -> float:
  """The matmul FLOPs of fn(*args), from its jaxpr (args may be ShapeDtypeStructs) with the
  equations no output needs removed first, as XLA removes them (e.g. the perturbation update
  after VILLA's last round, whose gradient nothing reads)."""
  jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
  live, _ = pe.dce_jaxpr(jaxpr, [True] * len(jaxpr.outvars))
  return jaxpr_matmul_flops(live)


def largest_arrays(fn, *args, top: int = 5) -> list:
  """The `top` largest values fn(*args) computes, from its jaxpr (global shapes, one device's
  inside a shard_map): [(bytes, 'dtype[shape]', where)] with `where` the model scope and
  primitive that makes it."""
  found = {}

  def visit(jaxpr, per_device=False):
    for eqn in jaxpr.eqns:
      for var in eqn.outvars:
        aval = getattr(var, "aval", None)
        if aval is None or not hasattr(aval, "shape") or not isinstance(aval.dtype, np.dtype):
          continue  # tokens, PRNG keys
        size = int(np.prod(aval.shape, dtype=np.int64)) * np.dtype(aval.dtype).itemsize
        scope = str(eqn.source_info.name_stack) or "top level"
        where = f"{scope} ({eqn.primitive.name}{', per device' if per_device else ''})"
        key = (f"{aval.dtype}[{','.join(map(str, aval.shape))}]", where)
        found[key] = max(found.get(key, 0), size)
      for value in eqn.params.values():
        for inner in _sub_jaxprs(value):
          visit(inner, per_device or eqn.primitive.name == "shard_map")

  visit(jax.make_jaxpr(fn)(*args).jaxpr)
  ranked = sorted(((size, shape, where) for (shape, where), size in found.items()), reverse=True)
  return ranked[:top]
