"""Ahead-of-time compilation for a TPU slice on any machine (--mode=compile).

The config's real mesh is built on libtpu's abstract devices for the slice, and its real jitted
programs are compiled for the config's shapes through the same set-up as a run (driver.start:
experiment, mesh, rules, optimizer, sharded state layout): the train step, and each task's
evaluation step or decode loop. Nothing is allocated on a device and no data is read. The report
(compile_report.json and a table) gives per-chip memory against HBM, FLOPs, collectives, and the
TPU cost model's estimated step time with the MFU it implies (an estimate, not a measurement).

With scanned layers the cost model sees a while loop (it counts the body once and its time
estimate is not usable), so FLOPs, bytes, collectives and time come from the same config
compiled with 1 and 2 unrolled layers (or the counts --compile_layers names) and extrapolated
along the least-squares line per layer; memory is the scanned program's own.
"""

import functools
import json
import time

import jax
import numpy as np

from unimo_jax.compile import analysis, topology
from unimo_jax.parallel import BATCH_AXES, batch_sharding
from unimo_jax.paths import as_path
from unimo_jax.train import driver
from unimo_jax.train.step import jit_train_step, train_step
from unimo_jax.errors import ConfigError

REPORT_FILE = "compile_report.json"


class DoesNotFit(ConfigError):
  """A program that needs more HBM per chip than the slice has."""


def _placed(abstract, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract, shardings)


def _batch_structs(spec, mesh):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(
      x.shape, x.dtype, sharding=batch_sharding(mesh, len(x.shape))), spec)


def _compile(lowered, what: str, effort: float = 0.0):
  """lowered.compile() at XLA's exec_time_optimization_effort `effort` (0: what a run
  compiles); an HBM overflow becomes DoesNotFit with the compiler's message."""
  try:
    return lowered.compile({"exec_time_optimization_effort": float(effort)} if effort else None)
  except Exception as e:  # XlaRuntimeError: the TPU compiler's RESOURCE_EXHAUSTED
    message = str(e)
    if "RESOURCE_EXHAUSTED" in message or "Ran out of memory" in message:
      raise DoesNotFit(f"{what} does not fit: {message.strip()}") from None
    raise


def _tokens(spec) -> int:
  """Token slots per global batch: every text position and region slot (padding included)."""
  total = 0
  def visit(node):
    nonlocal total
    if "input_ids" in node:
      total += int(np.prod(node["input_ids"].shape))
    if "region_mask" in node:
      total += int(np.prod(node["region_mask"].shape))
    for value in node.values():
      if isinstance(value, dict):
        visit(value)
  visit(spec)
  return total


def compile_run(config, workdir, devices, verbose: bool = False):
  """A run's set-up (driver.start) on `devices` for compiling: no data read, nothing allocated."""
  return driver.start(config, workdir, "compile", devices=devices, read_data=False,
                      verbose=verbose)


def train_step_program(config, workdir, devices, verbose: bool = False,
                       effort: float = 0.0, run=None) -> dict:
  """Compiles the config's train step on `devices` (or in `run`, a compile_run of the config);
  returns its report with the memory split into parameters, optimizer state and batch (their
  shards' bytes), the padding XLA adds to them, temporaries, outputs and code, and the model's
  matmul FLOPs."""
  run = run or compile_run(config, workdir, devices, verbose)
  experiment, mesh = run.experiment, run.mesh
  with run.context():
    state = _placed(run.abstract, run.shardings)
    spec = experiment.batch_spec()
    batch = _batch_structs(spec, mesh)
    step = jit_train_step(run.config, run.tx, mesh, run.shardings,
                          jax.tree.map(lambda x: x.sharding, batch), loss_fn=experiment.loss)
    start_time = time.perf_counter()
    try:
      compiled = _compile(step.lower(state, batch), "the train step", effort)
    except DoesNotFit as e:
      raise DoesNotFit(f"{e}\n{_largest_arrays_text(run, step, state, batch)}") from None
    seconds = time.perf_counter() - start_time
    report = analysis.program_report(compiled)
    report["compile_seconds"] = seconds
    report["model_flops"] = _model_flops(run, state, batch)
  arguments = {"parameters": analysis.tree_shard_bytes(state["params"]),
               "optimizer_state": analysis.tree_shard_bytes(state["opt_state"]),
               "batch": analysis.tree_shard_bytes(batch)}
  # what XLA counts beyond the arrays' own bytes: TPU tile padding of small dimensions (a
  # 64-wide bias takes a 128-lane tile) and the step counter and rng
  arguments["argument_padding"] = report["memory"]["arguments"] - sum(arguments.values())
  report["memory"] = dict(arguments, **{k: v for k, v in report["memory"].items()
                                        if k != "arguments"})
  report["examples"] = sum(run.experiment.batch_sizes(run.config).values())
  report["tokens"] = _tokens(spec)
  report["mesh"] = dict(mesh.shape)
  return report


def _largest_arrays_text(run, step, state, batch) -> str:
  """The step's largest arrays (global shapes), for an out-of-memory message."""
  devices = int(np.prod([run.mesh.shape[a] for a in BATCH_AXES]))
  rows = analysis.largest_arrays(step, state, batch)
  lines = [f"largest arrays of the step (global shapes, those led by the batch split over the "
           f"{devices} devices of the batch axes; 'per device': one device's shape already):"]
  lines += [f"  {size / 2 ** 30:8.2f} GiB  {shape}  {where}" for size, shape, where in rows]
  return "\n".join(lines)


def _model_flops(run, state, batch) -> float:
  """Matmul FLOPs of one train step of the model without rematerialisation (all chips), counted
  on the step's jaxpr."""
  config = run.config.copy_and_resolve_references()
  config.model.remat = "none"
  experiment = type(run.experiment)(config, run.workdir, run.mesh, data_paths={},
                                    tokenizer=run.experiment.tokenizer)
  step = functools.partial(train_step, config=config, tx=run.tx, mesh=run.mesh,
                           loss_fn=experiment.loss)
  return analysis.matmul_flops(step, state, batch)


def _layer_variant(config, layers: int):
  variant = config.copy_and_resolve_references()
  variant.model.num_layers = layers
  variant.model.scan_layers = False
  return variant


def layer_counts_checked(counts, num_layers: int) -> tuple:
  """The unrolled layer counts a scanned step's estimate is fitted on: at least two distinct
  counts from 1 to the model's num_layers."""
  try:
    counts = tuple(sorted({int(n) for n in counts}))
  except (TypeError, ValueError):
    raise ConfigError(f"--compile_layers expects layer counts like 1,2 or 1,2,3; found "
                      f"{list(counts)}") from None
  if len(counts) < 2 or counts[0] < 1 or counts[-1] > num_layers:
    raise ConfigError(f"--compile_layers expects at least two distinct layer counts from 1 to "
                      f"the model's {num_layers} layers; found {list(counts)}")
  return counts


def per_step_estimate(config, workdir, devices, program: dict, effort: float = 0.0,
                      layer_counts=(1, 2)) -> dict:
  """FLOPs, bytes, collectives and estimated seconds of one step: the program's own when its
  layers are unrolled, else the least-squares line per layer through the same config compiled
  with `layer_counts` unrolled layers (1 and 2 by default), read at the model's depth."""
  if not config.model.scan_layers:
    return {"method": "direct", "cost": program["cost"], "collectives": program["collectives"]}
  layers = int(config.model.num_layers)
  counts = layer_counts_checked(layer_counts, layers)
  programs = {}
  for n in counts:
    print(f"compiling the step with {n} unrolled layer(s) for the per-layer estimate ...",
          flush=True)
    programs[n] = train_step_program(_layer_variant(config, n), workdir, devices, effort=effort)
    cost = programs[n]["cost"]
    print(f"  {n} layer(s): estimated {1e3 * cost['estimated_seconds']:.2f} ms, "
          f"{cost['flops']:.3e} FLOPs per chip (compiled in "
          f"{programs[n]['compile_seconds']:.0f} s)", flush=True)
  seconds = {n: p["cost"]["estimated_seconds"] for n, p in programs.items()}
  return {"method": f"per-layer fit over {', '.join(map(str, counts))} unrolled layers",
          "per_layer": {"seconds": analysis.per_layer_slope(seconds),
                        "flops": analysis.per_layer_slope(
                            {n: p["cost"]["flops"] for n, p in programs.items()}),
                        "line_residual": analysis.line_residual(seconds),
                        "estimated_seconds": seconds},
          "cost": analysis.extrapolate({n: p["cost"] for n, p in programs.items()}, layers),
          "collectives": analysis.extrapolate(
              {n: p["collectives"] for n, p in programs.items()}, layers),
          "collectives_by_layers": {str(n): p["collectives"] for n, p in programs.items()},
          "variant_compile_seconds": sum(p["compile_seconds"] for p in programs.values())}


def eval_program_reports(config, workdir, devices, effort: float = 0.0, run=None) -> dict:
  """Each of the experiment's evaluation programs, compiled for one eval batch
  (config.eval_batch rounded up to the batch devices), on `devices` or in `run`."""
  run = run or compile_run(config, workdir, devices)
  mesh = run.mesh
  batch_devices = int(np.prod([mesh.shape[a] for a in BATCH_AXES]))
  size = -(-int(run.config.eval_batch) // batch_devices) * batch_devices
  reports = {}
  with run.context():
    params = _placed(run.abstract["params"], run.shardings["params"])
    for name, (fn, row) in run.experiment.eval_programs().items():
      spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct((size,) + np.shape(x),
                                                         np.asarray(x).dtype), row)
      start_time = time.perf_counter()
      compiled = _compile(jax.jit(fn).lower(params, _batch_structs(spec, mesh)), name, effort)
      reports[name] = dict(analysis.program_report(compiled), batch=size,
                           compile_seconds=time.perf_counter() - start_time)
  return reports


def summarize(slice_, train: dict, estimate: dict, evals: dict) -> dict:
  """The report: per-chip memory against usable HBM, FLOPs, collectives, estimated step time,
  throughput and MFU (cost-model estimates)."""
  chip, chips = slice_.chip, slice_.total_chips
  memory = dict(train["memory"], usable_hbm=chip.usable_hbm_bytes)
  memory["headroom"] = 1.0 - memory["total"] / chip.usable_hbm_bytes
  seconds = estimate["cost"]["estimated_seconds"]
  timed = bool(np.isfinite(seconds) and seconds > 0)
  out = {
      "topology": slice_.name, "libtpu_topology": slice_.topology, "num_slices": slice_.num_slices,
      "chips": chips, "mesh": train["mesh"],
      "chip": {"generation": chip.generation, "peak_bf16_flops": chip.peak_bf16_flops,
               "hbm_bytes": chip.hbm_bytes, "usable_hbm_bytes": chip.usable_hbm_bytes,
               "hbm_bandwidth": chip.hbm_bandwidth, "source": topology.SPEC_SOURCE},
      "train_step": {
          "fits": memory["total"] <= chip.usable_hbm_bytes, "memory_per_chip": memory,
          "flops_per_chip_xla": estimate["cost"]["flops"],
          "model_flops_per_step": train["model_flops"],
          "bytes_accessed_per_chip": estimate["cost"]["bytes_accessed"],
          "random_bits_per_chip": estimate["cost"]["random_bits_bytes"],
          "collectives": estimate["collectives"], "estimate_method": estimate["method"],
          # the unrolled compiles' own counts, when the figures above are extrapolated from them
          "collectives_by_layers": estimate.get("collectives_by_layers"),
          "estimated_step_seconds": seconds if timed else None,
          "examples_per_step": train["examples"], "token_slots_per_step": train["tokens"],
          "compile_seconds": train["compile_seconds"],
      },
      "eval_programs": {name: {"memory_per_chip": r["memory"], "batch": r["batch"],
                               "flops_per_chip_xla": r["cost"]["flops"],
                               "collectives": r["collectives"],
                               # a decode loop's body is priced once: no time estimate
                               "estimated_seconds": (r["cost"]["estimated_seconds"]
                                                     if r["cost"]["estimated_seconds"] > 0
                                                     and not r["cost"]["loops"] else None),
                               "compile_seconds": r["compile_seconds"]}
                        for name, r in evals.items()},
  }
  step = out["train_step"]
  if "per_layer" in estimate:
    per_layer = estimate["per_layer"]
    step["per_layer_increment"] = dict(
        analysis.per_layer_increment(per_layer["seconds"], per_layer["flops"],
                                     chip.peak_bf16_flops, per_layer["line_residual"]),
        estimated_seconds_by_layers={str(n): s for n, s in per_layer["estimated_seconds"].items()})
  if timed:
    step["estimated_examples_per_second"] = train["examples"] / seconds
    step["estimated_token_slots_per_second"] = train["tokens"] / seconds
    step["estimated_mfu"] = train["model_flops"] / (seconds * chips * chip.peak_bf16_flops)
  return out


def _gib(x) -> str:
  return f"{x / 2 ** 30:.2f}"


def format_report(report: dict) -> str:
  """The report as a console table."""
  step, mem = report["train_step"], report["train_step"]["memory_per_chip"]
  chip = report["chip"]
  lines = [f"compiled for {report['topology']} ({report['libtpu_topology']}, "
           f"{report['chips']} chips, mesh {report['mesh']}); figures per chip unless noted",
           f"chip: {chip['generation']}, {chip['peak_bf16_flops'] / 1e12:.0f} TFLOP/s bf16, "
           f"{_gib(chip['usable_hbm_bytes'])} GiB usable HBM, "
           f"{chip['hbm_bandwidth'] / 1e9:.0f} GB/s",
           f"{'memory (GiB)':<28}{'':>10}"]
  for key in ("parameters", "optimizer_state", "batch", "argument_padding", "temporaries",
              "outputs", "code", "total"):
    lines.append(f"  {key:<26}{_gib(mem[key]):>10}")
  lines.append(f"  {'usable HBM':<26}{_gib(mem['usable_hbm']):>10}   headroom "
               f"{100 * mem['headroom']:.1f} %  ({'fits' if step['fits'] else 'DOES NOT FIT'})")
  lines.append(f"FLOPs per chip (XLA) {step['flops_per_chip_xla']:.3e}; model FLOPs per step "
               f"(no remat) {step['model_flops_per_step']:.3e}; bytes accessed "
               f"{step['bytes_accessed_per_chip']:.3e}")
  if step["random_bits_per_chip"]:
    lines.append(f"random bits drawn by RngBitGenerator (rng_impl 'rbg'): "
                 f"{step['random_bits_per_chip'] / 2 ** 20:.1f} MiB per chip; XLA draws each "
                 "mask at its global shape on every chip (threefry2x32 draws only the chip's "
                 "shard)")
  lines.append("collectives: " + ", ".join(
      f"{k} {v['count']:.0f} ({v['bytes'] / 2 ** 20:.1f} MiB)"
      for k, v in step["collectives"].items() if v["count"]) or "collectives: none")
  if step["estimated_step_seconds"] is not None:
    lines.append(f"estimated step {1e3 * step['estimated_step_seconds']:.1f} ms "
                 f"({step['estimate_method']}), {step['estimated_examples_per_second']:.0f} "
                 f"examples/s, {step['estimated_token_slots_per_second']:.3g} token slots/s, "
                 f"estimated MFU {100 * step['estimated_mfu']:.1f} % (XLA's TPU cost model)")
  increment = step.get("per_layer_increment")
  if increment:
    by_layers = increment["estimated_seconds_by_layers"]
    lines.append(f"per layer (slope over {len(by_layers)} unrolled compiles: "
                 + ", ".join(f"{n} layer(s) {1e3 * s:.1f} ms" for n, s in by_layers.items())
                 + f"): {1e3 * increment['seconds']:.2f} ms, {increment['flops']:.3e} FLOPs per "
                 f"chip, {100 * increment['fraction_of_peak']:.0f} % of the chip's peak"
                 + (f"; off the line by up to {100 * increment['line_residual']:.1f} %"
                    if len(by_layers) > 2 else ""))
    if not increment["plausible"]:
      lines.append("WARNING: the per-layer increment runs faster than the chip's peak: the cost "
                   "model's estimates of the unrolled programs do not follow their work, so the "
                   "step time above is optimistic and the MFU overstated")
    if not increment["linear"]:
      lines.append(f"WARNING: the unrolled compiles' estimates lie up to "
                   f"{100 * increment['line_residual']:.1f} % off a straight line in the layer "
                   f"count (tolerance {100 * analysis.LINE_TOLERANCE:.0f} %): the per-layer "
                   "extrapolation is uncertain")
  for name, r in report["eval_programs"].items():
    est = (f", estimated {1e3 * r['estimated_seconds']:.1f} ms" if r["estimated_seconds"]
           else "")
    lines.append(f"{name}: batch {r['batch']}, {_gib(r['memory_per_chip']['total'])} GiB per "
                 f"chip{est}")
  return "\n".join(lines)


def compile_for_tpu(config, workdir, topology_name: str, num_slices: int = 1,
                    effort: float = 0.0, layer_counts=(1, 2)) -> dict:
  """Compiles the config's programs for a TPU slice; writes <workdir>/compile_report.json and
  prints the table. DoesNotFit (exit 2) when a program needs more HBM than a chip has.
  effort: XLA's exec_time_optimization_effort in [-1, 1]; 0 compiles what a run compiles, -1
  compiles several times faster a less optimised program (quick what-if checks).
  layer_counts: the unrolled layer counts a scanned step's per-layer estimate is fitted on."""
  if config.model.scan_layers:
    layer_counts = layer_counts_checked(layer_counts, int(config.model.num_layers))
  try:
    slice_ = topology.parse_slice(topology_name, num_slices)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  devices = topology.abstract_devices(slice_)
  print(f"compiling for {slice_.name} ({slice_.topology} x {slice_.num_slices}) on libtpu's "
        f"abstract devices ...", flush=True)
  run = compile_run(config, workdir, devices, verbose=True)  # shared by the step and evals
  train = train_step_program(config, workdir, devices, effort=effort, run=run)
  estimate = per_step_estimate(config, workdir, devices, train, effort, layer_counts)
  evals = eval_program_reports(config, workdir, devices, effort, run=run)
  report = summarize(slice_, train, estimate, evals)
  report["compile_effort"] = float(effort)
  workdir = as_path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / REPORT_FILE).write_text(json.dumps(report, indent=2))
  print(format_report(report), flush=True)
  print(f"wrote {workdir / REPORT_FILE}", flush=True)
  if not report["train_step"]["fits"]:
    raise DoesNotFit(f"the train step needs {_gib(report['train_step']['memory_per_chip']['total'])}"
                     f" GiB per chip, more than {slice_.name}'s {_gib(slice_.chip.usable_hbm_bytes)}")
  return report
