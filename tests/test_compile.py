"""Compilation for TPU slices on this CPU machine (libtpu's compile-only client, --mode=compile):
TPU names, report consistency against XLA's own accounting and an independent per-shard count,
collectives with and without fsdp, an HBM overflow, the per-layer estimate of scanned layers,
the start-up sharding check, and state on non-addressable devices.

Compiles use exec_time_optimization_effort -1 (a less optimised program, compiled several times
faster) unless a test is about the default compile: the assertions are about the report's
plumbing and arithmetic, which do not depend on how hard XLA optimises.
"""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest

from train_helpers import (ROOT, config_from_file, main_command, pretrain_config, run_main,
                           set_fields)
from unimo_jax.compile import analysis, aot, topology
from unimo_jax.parallel import (DEFAULT_LOGICAL_AXIS_RULES, make_mesh, rules_from_config,
                                sharding_excess)

pytest.importorskip("libtpu", reason="the TPU compile tests need libtpu (the test extra)")
FAST = -1.0  # exec_time_optimization_effort for the quick compiles


def small(config, **fields):
  """A tiny pretraining config with fewer streams (so a compile takes seconds)."""
  config.batch.text, config.batch.image, config.batch.pair = 8, 0, 8
  config.data.cmcl_extra_positives = config.data.cmcl_hard_negatives = 0
  return set_fields(config, fields)


@pytest.mark.parametrize("name,topology_string,chips", [
    ("v5e-1", "v5e:1x1", 1), ("v5e-4", "v5e:2x2", 4), ("v5e-16", "v5e:4x4", 16),
    ("v5e-256", "v5e:16x16", 256), ("v6e-64", "v6e:8x8", 64), ("v4-8", "v4:2x2x1", 4),
    ("v4-32", "v4:2x2x4", 16), ("v4-128", "v4:4x4x4", 64), ("v5p-8", "v5:2x2x1", 4),
    ("v5p-128", "v5:4x4x4", 64), ("v5p-1024", "v5:8x8x8", 512)])
def test_tpu_names_map_to_libtpu_topologies(name, topology_string, chips):
  s = topology.parse_slice(name)
  assert (s.topology, s.chips) == (topology_string, chips)


@pytest.mark.parametrize("name", ["v5e-3", "v4-6", "v5p-4", "tpu-8", "v5e-512", "v4"])
def test_unknown_tpu_names_are_named(name):
  with pytest.raises(ValueError, match="--topology"):
    topology.parse_slice(name)


def _expected_parameter_bytes(config, mesh_sizes) -> int:
  """Per-chip parameter bytes written out from the rules table: each dimension divided by the
  product of the mesh axes its logical name maps to (a mesh axis used once per array)."""
  from unimo_jax.model.params import abstract_params
  rules = dict(rules_from_config(config.logical_axis_rules))
  boxed = abstract_params(config.model)
  total = 0
  for leaf in jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned)):
    used, size = set(), 1
    for dim, name in zip(leaf.value.shape, leaf.names):
      axes = rules.get(name) if name else None
      axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
      axes = tuple(a for a in axes if a not in used)
      used.update(axes)
      size *= dim // int(np.prod([mesh_sizes[a] for a in axes]))
    total += size * np.dtype(leaf.value.dtype).itemsize
  return total


@pytest.mark.tpu
@pytest.mark.parametrize("slice_name,mesh", [("v5e-4", {"data": 1, "fsdp": 4, "tensor": 1}),
                                             ("v4-8", {"data": 4, "fsdp": 1, "tensor": 1})])
def test_tiny_pretraining_compiles_and_reports_consistent_figures(slice_name, mesh, tmp_path):
  config = small(pretrain_config("tiny"), mesh=mesh)
  devices = topology.abstract_devices(topology.parse_slice(slice_name))
  program = aot.train_step_program(config, tmp_path, devices, effort=FAST)
  report = aot.summarize(topology.parse_slice(slice_name), program,
                         aot.per_step_estimate(config, tmp_path, devices, program), {})
  step, memory = report["train_step"], report["train_step"]["memory_per_chip"]
  parts = ("parameters", "optimizer_state", "batch", "argument_padding", "temporaries",
           "outputs", "code")
  assert sum(memory[p] for p in parts) == memory["total"]
  # XLA's argument bytes are the shards' plus tile padding (a 64-wide tiny model pads to
  # 128-lane tiles), never less
  arguments = sum(memory[p] for p in parts[:4])
  assert memory["argument_padding"] >= 0 and memory["parameters"] < arguments
  expected = _expected_parameter_bytes(config, report["mesh"])
  assert memory["parameters"] == pytest.approx(expected, rel=0.01)
  assert memory["optimizer_state"] == pytest.approx(2 * expected, rel=0.01)  # Adam's mu and nu
  assert step["flops_per_chip_xla"] > 0 and step["model_flops_per_step"] > 0
  assert step["estimated_step_seconds"] > 0 and 0 < step["estimated_mfu"] < 1
  assert step["fits"] and 0 < memory["headroom"] < 1
  gathers = step["collectives"]["all-gather"]["count"] + step["collectives"]["all-reduce"]["count"]
  assert gathers > 0  # fsdp gathers parameters, data parallelism reduces gradients


@pytest.mark.tpu
def test_one_chip_has_no_collectives(tmp_path):
  config = small(pretrain_config("tiny"), mesh={"data": 1, "fsdp": 1, "tensor": 1})
  devices = topology.abstract_devices(topology.parse_slice("v5e-1"))
  program = aot.train_step_program(config, tmp_path, devices, effort=FAST)
  assert all(v["count"] == 0 for v in program["collectives"].values()), program["collectives"]


def test_model_flops_are_the_matmuls_written_out():
  """The jaxpr count of a dense layer's forward+backward is 3 x 2 M N K."""
  from unimo_jax.compile.analysis import matmul_flops
  x, w = jax.ShapeDtypeStruct((8, 16), np.float32), jax.ShapeDtypeStruct((16, 32), np.float32)
  loss = lambda w, x: (x @ w).sum()
  # dL/dw = x^T @ ones needs no forward product: without the loss value, grad is one matmul
  assert matmul_flops(jax.grad(loss), w, x) == 2 * 8 * 16 * 32
  assert matmul_flops(lambda w, x: jax.value_and_grad(loss, argnums=(0, 1))(w, x), w, x) == (
      3 * 2 * 8 * 16 * 32)
  scanned = lambda w, x: jax.lax.scan(lambda c, _: (c @ w[:, :16], None), x, None, length=5)[0]
  assert matmul_flops(scanned, w, x) == 5 * 2 * 8 * 16 * 16
  # a product no output reads is not counted (XLA drops it too)
  assert matmul_flops(lambda w, x: (x @ w, x.sum())[1], w, x) == 0
  # a shard_map body sees one device's rows: counted once per device of its manual axes
  from jax.sharding import PartitionSpec as P
  from unimo_jax.parallel import make_mesh
  mesh = make_mesh({"data": 4, "fsdp": 2}, jax.devices()[:8])
  per_device = jax.shard_map(lambda w, x: x @ w, mesh=mesh, in_specs=(P(), P("data")),
                             out_specs=P("data"), axis_names={"data"})
  assert matmul_flops(per_device, w, x) == 2 * 8 * 16 * 32  # 4 devices x 2 rows
  both = jax.shard_map(lambda w, x: x @ w, mesh=mesh, in_specs=(P(), P(("data", "fsdp"))),
                       out_specs=P(("data", "fsdp")))
  assert matmul_flops(both, w, x) == 2 * 8 * 16 * 32  # 8 devices x 1 row


def _dropout_program(impl: str):
  """A dropout mask of a [64, 256] batch split over 4 v5e chips, compiled with PRNG `impl`."""
  from jax.sharding import NamedSharding, PartitionSpec as P
  from unimo_jax.parallel import batch_sharding
  mesh = make_mesh({"data": 4, "fsdp": 1, "tensor": 1},
                   topology.abstract_devices(topology.parse_slice("v5e-4")))
  rows = batch_sharding(mesh, 2)

  def dropped(seed, x):
    keep = jax.random.bernoulli(jax.random.key(seed, impl=impl), 0.9, x.shape)
    return jax.numpy.where(keep, x, 0.0)

  return jax.jit(dropped, out_shardings=rows).lower(
      jax.ShapeDtypeStruct((), np.uint32, sharding=NamedSharding(mesh, P())),
      jax.ShapeDtypeStruct((64, 256), np.float32, sharding=rows)).compile()


@pytest.mark.tpu
def test_random_bits_count_what_rbg_draws_per_chip():
  """rbg's RngBitGenerator draws the whole [64, 256] mask (4 bytes an element) on every chip,
  4x the chip's 16-row shard; threefry draws with ordinary ops (no RngBitGenerator) and only
  the shard, so its program touches fewer bytes."""
  from unimo_jax.compile.analysis import cost
  rbg, threefry = cost(_dropout_program("rbg")), cost(_dropout_program("threefry2x32"))
  assert rbg["random_bits_bytes"] == 64 * 256 * 4
  assert threefry["random_bits_bytes"] == 0
  assert threefry["bytes_accessed"] < 0.5 * rbg["bytes_accessed"]


@pytest.mark.tpu
def test_scanned_layers_estimate_agrees_with_the_unrolled_model(tmp_path):
  """4 scanned layers, extrapolated from 1 and 2 unrolled ones, against 4 unrolled layers."""
  config = small(pretrain_config("tiny"), **{"model.num_layers": 4, "batch.pair": 0,
                                         "mesh": {"data": 1, "fsdp": 4, "tensor": 1}})
  devices = topology.abstract_devices(topology.parse_slice("v5e-4"))
  unrolled = aot.train_step_program(config, tmp_path, devices, effort=FAST)
  config.model.scan_layers = True
  scanned = aot.train_step_program(config, tmp_path, devices, effort=FAST)
  # the scanned program's own figures count the loop body once: far below the unrolled ones
  assert scanned["cost"]["loops"] > 0 and scanned["cost"]["flops"] < 0.7 * unrolled["cost"]["flops"]
  estimate = aot.per_step_estimate(config, tmp_path, devices, scanned, effort=FAST)
  assert estimate["cost"]["estimated_seconds"] == pytest.approx(
      unrolled["cost"]["estimated_seconds"], rel=0.05)
  assert estimate["cost"]["flops"] == pytest.approx(unrolled["cost"]["flops"], rel=0.05)
  # fitted over 1, 2 and 3 layers: as close, and the three estimates lie on the line
  fitted = aot.per_step_estimate(config, tmp_path, devices, scanned, effort=FAST,
                                 layer_counts=(3, 1, 2))
  assert fitted["method"] == "per-layer fit over 1, 2, 3 unrolled layers"
  assert fitted["cost"]["estimated_seconds"] == pytest.approx(
      unrolled["cost"]["estimated_seconds"], rel=0.05)
  assert fitted["cost"]["flops"] == pytest.approx(unrolled["cost"]["flops"], rel=0.05)
  assert fitted["per_layer"]["line_residual"] < analysis.LINE_TOLERANCE
  by_layers = fitted["collectives_by_layers"]
  assert sorted(by_layers) == ["1", "2", "3"]
  assert fitted["collectives"]["all-reduce"]["count"] == pytest.approx(analysis.extrapolate(
      {int(n): c["all-reduce"]["count"] for n, c in by_layers.items()}, 4))
  assert scanned["model_flops"] == pytest.approx(unrolled["model_flops"], rel=1e-6)
  # the report checks the per-layer increment against the chip's peak
  slice_ = topology.parse_slice("v5e-4")
  report = aot.summarize(slice_, scanned, estimate, {})
  increment = report["train_step"]["per_layer_increment"]
  assert 0 < increment["fraction_of_peak"] <= 1 and increment["plausible"]
  assert increment["fraction_of_peak"] == pytest.approx(
      increment["flops"] / increment["seconds"] / slice_.chip.peak_bf16_flops)
  assert "WARNING" not in aot.format_report(report)
  report["train_step"]["per_layer_increment"] = dict(increment, **analysis.per_layer_increment(
      increment["seconds"], 2 * increment["seconds"] * slice_.chip.peak_bf16_flops,
      slice_.chip.peak_bf16_flops))
  assert "WARNING: the per-layer increment runs faster than the chip's peak" in (
      aot.format_report(report))


def test_per_layer_increment_against_the_chips_peak():
  """caption:base's 1- and 2-layer v5e-8 compiles (estimates at two commits): one more layer
  adding 1.293e12 FLOPs per chip in 4.21 ms would run at 156 % of a v5e chip's 197 TFLOP/s."""
  per_layer_increment = analysis.per_layer_increment
  peak = 197e12
  old = per_layer_increment(4.21e-3, 1.293e12, peak)
  assert old["fraction_of_peak"] == pytest.approx(1.293e12 / 4.21e-3 / peak) and not old["plausible"]
  new = per_layer_increment(8.0e-3, 1.357e12, peak)
  assert new["fraction_of_peak"] == pytest.approx(0.861, abs=1e-3) and new["plausible"]
  assert not per_layer_increment(-1e-3, 1e12, peak)["plausible"]  # a layer that saves time


def test_the_per_layer_line_is_the_least_squares_fit():
  """extrapolate / per_layer_slope / line_residual against numpy's polyfit, on nested figures."""
  points = {1: {"t": 68.5, "c": {"n": 10.0}}, 2: {"t": 76.5, "c": {"n": 14.0}},
            3: {"t": 90.0, "c": {"n": 18.0}}}
  slope, intercept = np.polyfit([1, 2, 3], [68.5, 76.5, 90.0], 1)
  out = analysis.extrapolate(points, 12)
  assert out["t"] == pytest.approx(intercept + 12 * slope, rel=1e-12)
  assert out["c"]["n"] == pytest.approx(10.0 + 11 * 4.0, rel=1e-12)
  times = {n: p["t"] for n, p in points.items()}
  assert analysis.per_layer_slope(times) == pytest.approx(10.75, rel=1e-12)
  fitted = {n: intercept + slope * n for n in (1, 2, 3)}
  assert analysis.line_residual(times) == pytest.approx(
      max(abs(times[n] - fitted[n]) / times[n] for n in (1, 2, 3)), rel=1e-9)
  # two counts: the line through both, read at L (x1 + (L - 1) * (x2 - x1)); no residual
  two = {1: times[1], 2: times[2]}
  assert analysis.extrapolate(two, 12) == pytest.approx(68.5 + 11 * 8.0, rel=1e-12)
  assert analysis.line_residual(two) == pytest.approx(0.0, abs=1e-12)
  increment = analysis.per_layer_increment(10.75e-3, 1e12, 197e12, residual=0.06)
  assert increment["plausible"] and not increment["linear"]


@pytest.mark.parametrize("counts", [("1",), ("1", "1"), ("0", "1"), ("1", "13"), ("1", "x")])
def test_per_layer_fit_needs_two_layer_counts_within_the_model(counts):
  with pytest.raises(aot.ConfigError, match="--compile_layers expects"):
    aot.layer_counts_checked(counts, 12)


def compile_command(workdir, *flags):
  """`python -m unimo_jax.main --mode=compile` (quick compile) with `flags`; the finished run."""
  return run_main(main_command(workdir, "--mode=compile", "--compile_effort=-1", *flags),
                  check=False)


@pytest.mark.tpu
@pytest.mark.slow
def test_a_config_that_does_not_fit_exits_non_zero_naming_the_overflow(tmp_path):
  result = compile_command(tmp_path, "--topology=v5e-1", "--config.mesh.data=1",
                           "--config.batch.text=65536", "--config.batch.image=0",
                           "--config.batch.pair=0")
  assert result.returncode == 2, result.stderr[-3000:]
  assert "does not fit" in result.stderr and "exceeds available HBM (15.75G)" in result.stderr
  assert "largest arrays of the step" in result.stderr and "attention" in result.stderr
  assert "Traceback" not in result.stderr


@pytest.mark.tpu
@pytest.mark.slow
def test_the_command_writes_the_report(tmp_path):
  result = compile_command(tmp_path, "--topology=v5e-4", "--config=configs/glue.py:tiny",
                           "--config.mesh.data=1", "--config.mesh.fsdp=4",
                           "--config.batch_size=16", "--config.model.scan_layers=True")
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((tmp_path / "compile_report.json").read_text())
  # the scanned step's per-layer estimate: each unrolled compile printed as it finishes
  assert report["train_step"]["estimate_method"] == "per-layer fit over 1, 2 unrolled layers"
  for n in ("1", "2"):
    seconds = report["train_step"]["per_layer_increment"]["estimated_seconds_by_layers"][n]
    assert f"  {n} layer(s): estimated {1e3 * seconds:.2f} ms" in result.stdout
  assert sorted(report["train_step"]["collectives_by_layers"]) == ["1", "2"]
  assert report["libtpu_topology"] == "v5e:2x2" and report["mesh"]["fsdp"] == 4
  assert report["train_step"]["examples_per_step"] == 16
  assert report["eval_programs"]["eval_step"]["batch"] == 64  # eval_batch, over 4 devices
  assert report["train_step"]["random_bits_per_chip"] == 0  # threefry keys draw no rbg bits
  assert "estimated MFU" in result.stdout and "WARNING: could not determine" not in result.stderr


@pytest.mark.tpu
@pytest.mark.slow
def test_bad_layer_counts_stop_the_command_before_compiling(tmp_path):
  result = compile_command(tmp_path, "--topology=v5e-4", "--config.model.scan_layers=True",
                           "--compile_layers=2")
  assert result.returncode == 2, result.stderr[-3000:]
  assert "--compile_layers expects at least two distinct layer counts" in result.stderr
  assert "Traceback" not in result.stderr and "compiling for" not in result.stdout


# ---- the start-up sharding check (CPU mesh) ---------------------------------------------------

def test_sharding_check_fires_for_replicated_mlp_kernels_and_not_for_the_defaults():
  from unimo_jax.parallel import check_sufficiently_sharded
  from unimo_jax.train.optimizer import make_optimizer
  from unimo_jax.train.state import state_shardings
  config = pretrain_config("tiny")
  mesh = make_mesh({"data": 1, "fsdp": 8, "tensor": 1}, devices=jax.devices()[:8])
  defaults = rules_from_config(DEFAULT_LOGICAL_AXIS_RULES)
  # a typo: 'embed' maps to no mesh axis, so the MLP kernels [embed, mlp] stay whole everywhere
  typo = tuple((name, None) if name == "embed" else (name, axes) for name, axes in defaults)
  found = {}
  for name, rules in (("defaults", defaults), ("typo", typo)):
    abstract, shardings = state_shardings(config, make_optimizer(config), mesh, rules)
    trained = ({k: abstract[k] for k in ("params", "opt_state")},
               {k: shardings[k] for k in ("params", "opt_state")})
    found[name] = sharding_excess(*trained, mesh)
    if name == "defaults":
      check_sufficiently_sharded(*trained, mesh, config.sharding_tolerance)  # silent
    else:
      with pytest.raises(ValueError, match=r"over an even split across fsdp x tensor.*ffn_fc"):
        check_sufficiently_sharded(*trained, mesh, config.sharding_tolerance)
  assert found["defaults"]["excess"] < config.sharding_tolerance < found["typo"]["excess"]
  # nearly every array stays whole: several times the per-device bytes of the defaults
  assert found["typo"]["per_device"] > 4 * found["defaults"]["per_device"]


def test_a_replicating_rule_stops_the_run_before_anything_is_written(tmp_path):
  """Through the one driver: a ConfigError naming the largest replicated array, nothing
  written (not even the synthetic scenes)."""
  from unimo_jax.train import driver
  from unimo_jax.errors import ConfigError
  config = pretrain_config("tiny")
  config.mesh.data, config.mesh.fsdp = 1, 8
  config.logical_axis_rules = [[n, None] if n == "embed" else [n, a]
                               for n, a in config.logical_axis_rules]
  with pytest.raises(ConfigError, match=r"sharding: .* check logical_axis_rules"):
    driver.train_and_evaluate(config, tmp_path / "w")
  assert not (tmp_path / "w").exists()


@pytest.mark.tpu
def test_state_and_mesh_on_abstract_devices(tmp_path):
  """The run's own set-up (driver.start) on non-addressable TPU devices: no array is made."""
  from unimo_jax.train import driver
  devices = topology.abstract_devices(topology.parse_slice("v5e-4"))
  run = driver.start(small(pretrain_config("tiny"), mesh={"data": 2, "fsdp": 2, "tensor": 1}),
                     tmp_path, "compile", devices=devices, read_data=False, verbose=False)
  kernel = run.shardings["params"]["encoder"]["layer_0"]["ffn_fc_0"]["kernel"]
  assert {d.id for d in kernel.device_set} == {d.id for d in devices}
  assert kernel.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  assert run.abstract["params"]["encoder"]["layer_0"]["ffn_fc_0"]["kernel"].shape == (64, 256)
  assert not any(tmp_path.iterdir())  # read_data=False writes nothing


@pytest.mark.tpu
def test_libtpu_starts_with_the_compiler_stack_setting(monkeypatch):
  """The fiber stack setting goes into LIBTPU_INIT_ARGS once, beside the user's own flags (and
  never over their own value of it), and libtpu, which refuses a flag it does not know, starts
  and compiles with it (in a fresh process: libtpu reads the variable once)."""
  monkeypatch.setenv("LIBTPU_INIT_ARGS", "--xla_enable_async_all_gather=true")
  topology.give_libtpu_compiler_stack()
  topology.give_libtpu_compiler_stack()
  args = os.environ["LIBTPU_INIT_ARGS"].split()
  assert args == ["--xla_enable_async_all_gather=true",
                  f"--fibers_default_thread_stack_size={topology.FIBER_STACK_BYTES}"]
  monkeypatch.setenv("LIBTPU_INIT_ARGS", "--fibers_default_thread_stack_size=65536")
  topology.give_libtpu_compiler_stack()
  assert os.environ["LIBTPU_INIT_ARGS"] == "--fibers_default_thread_stack_size=65536"
  monkeypatch.delenv("LIBTPU_INIT_ARGS")
  script = ("import jax, jax.numpy as jnp, numpy as np, os\n"
            "from jax.sharding import Mesh, NamedSharding, PartitionSpec as P\n"
            "from unimo_jax.compile import topology\n"
            "devices = topology.abstract_devices(topology.parse_slice('v5e-1'))\n"
            "mesh = Mesh(np.array(devices), ('chip',))\n"
            "x = jax.ShapeDtypeStruct((128, 128), jnp.float32, sharding=NamedSharding(mesh, P()))\n"
            "jax.jit(lambda a: a @ a).lower(x).compile()\n"
            "print(os.environ['LIBTPU_INIT_ARGS'])\n")
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "Unknown command line flag" not in result.stderr
  assert result.stdout.split() == [
      f"--fibers_default_thread_stack_size={topology.FIBER_STACK_BYTES}"]


@pytest.mark.tpu
@pytest.mark.parametrize("config_file,preset,slice_name", [
    ("pretrain", "base", "v5e-16"), ("pretrain", "large", "v5p-32"), ("caption", "base", "v5e-8"),
    ("retrieval", "base", "v5e-8"), ("vqa", "base", "v5e-8"), ("snli_ve", "base", "v5e-8"),
    ("glue", "base", "v5e-8"), ("seq2seq", "base", "v5e-8")] + [
        (dataset, "base", "v5e-8") for dataset in ("cola", "sst2", "mnli", "stsb", "cnndm",
                                                   "gigaword", "squad_qg", "coqa")])
def test_every_shipped_preset_passes_the_sharding_check_on_its_slice(config_file, preset,
                                                                    slice_name, tmp_path):
  """The presets' own rules and heads (VQA's 3,129-answer classifier included) split parameters
  and optimizer state evenly over the slice they are sized for: the start-up check raises
  otherwise (no compile: the state's layout only)."""
  from unimo_jax.train import driver
  config = config_from_file(config_file, preset)
  devices = topology.abstract_devices(topology.parse_slice(slice_name))
  run = driver.start(config, tmp_path, "compile", devices=devices, read_data=False,
                     verbose=False)
  trained = ("params", "opt_state")
  found = sharding_excess({k: run.abstract[k] for k in trained},
                          {k: run.shardings[k] for k in trained}, run.mesh)
  assert found["excess"] < config.sharding_tolerance
  # pretraining base replicates its state (data parallelism, chosen by the compile report);
  # every other preset shards it over every chip
  replicated = (config_file, preset) == ("pretrain", "base")
  assert (run.mesh.shape["data"], run.mesh.shape["fsdp"]) == (
      (len(devices), 1) if replicated else (1, len(devices)))


# ---- a CPU machine with libtpu installed --------------------------------------------------------

def test_a_cpu_machine_skips_libtpu_unless_told(monkeypatch):
  monkeypatch.delenv("JAX_PLATFORMS", raising=False)
  monkeypatch.setattr(topology, "tpu_chips_present", lambda: False)
  topology.skip_absent_tpu()
  assert os.environ["JAX_PLATFORMS"] == "cpu"
  monkeypatch.setenv("JAX_PLATFORMS", "tpu,cpu")  # the user's choice stands
  topology.skip_absent_tpu()
  assert os.environ["JAX_PLATFORMS"] == "tpu,cpu"
  monkeypatch.delenv("JAX_PLATFORMS")
  monkeypatch.setattr(topology, "tpu_chips_present", lambda: True)  # a TPU VM: JAX's choice
  topology.skip_absent_tpu()
  assert "JAX_PLATFORMS" not in os.environ


@pytest.mark.slow
def test_no_libtpu_error_lines_on_a_cpu_run(tmp_path):
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_PLATFORMS", "TPU_"))}
  env["JAX_NUM_CPU_DEVICES"] = "1"
  result = subprocess.run(main_command(tmp_path / "w", "--mode=check"), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "INVALID_ARGUMENT" not in result.stderr and "TPU_WORKER_HOSTNAMES" not in result.stderr
