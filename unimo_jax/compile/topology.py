"""TPU slices as users name them (v5e-16, v4-32, v5p-8, v6e-64, ...), their libtpu topology
strings, and each chip's peak bf16 FLOP/s, HBM and bandwidth.

Sources: the "key chip specifications" tables of cloud.google.com/tpu/docs/v4, /v5e, /v5p and
/v6e (peak bf16 per chip, HBM capacity and bandwidth). "usable HBM" is what libtpu 0.0.42.1's
compiler lets a program allocate per chip (from its out-of-memory message: "exceeds available
HBM (15.75G)" on v5e), the figure a fit is judged against.

Naming: v4-N and v5p-N count TensorCores (two per chip, one megacore device per chip), v5e-N and
v6e-N count chips. Slices of a power-of-two chip count are supported; the chip grid grows by
doubling its last smallest side, as Cloud TPU lays out its slices (v5e-16 = 4x4, v4-32 = 2x4x4).
"""

import dataclasses
import glob
import importlib.util
import os
import re

GIB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Chip:
  generation: str  # as in TPU names: v4, v5e, v5p, v6e
  libtpu_name: str  # the prefix of libtpu topology strings
  cores_per_name_unit: int  # TPU names count TensorCores (2 per chip) or chips (1)
  dims: int  # 2-D or 3-D chip grid
  peak_bf16_flops: float  # per chip
  hbm_bytes: float  # nominal, per chip
  usable_hbm_bytes: float  # what the compiler allows a program, per chip
  hbm_bandwidth: float  # bytes/s, per chip
  max_chips: int


CHIPS = {
    "v4": Chip("v4", "v4", 2, 3, 275e12, 32 * GIB, 30.75 * GIB, 1200e9, 4096),
    "v5e": Chip("v5e", "v5e", 1, 2, 197e12, 16e9, 15.75 * GIB, 819e9, 256),
    "v5p": Chip("v5p", "v5", 2, 3, 459e12, 95e9, 95.74 * GIB, 2765e9, 8960),
    "v6e": Chip("v6e", "v6e", 1, 2, 918e12, 32e9, 31.25 * GIB, 1638e9, 256),
}
SPEC_SOURCE = ("cloud.google.com/tpu/docs/{v4,v5e,v5p,v6e}: key chip specifications; usable HBM "
               "from libtpu 0.0.42.1's compile-time limit")


@dataclasses.dataclass(frozen=True)
class Slice:
  name: str  # e.g. 'v5e-16'
  chip: Chip
  chips: int  # per slice
  grid: tuple  # chip grid, e.g. (4, 4)
  num_slices: int = 1

  @property
  def topology(self) -> str:
    """The libtpu topology string, e.g. 'v5e:4x4'."""
    return f"{self.chip.libtpu_name}:{'x'.join(str(d) for d in self.grid)}"

  @property
  def total_chips(self) -> int:
    return self.chips * self.num_slices


def chip_grid(chips: int, dims: int) -> tuple:
  """The chip grid of a power-of-two slice: from 1x1 (2-D) or 2x2x1 (3-D), double the last of
  the smallest sides until the grid holds `chips`."""
  grid = [1] * dims if dims == 2 else [2, 2, 1]
  if dims == 3 and chips < 4:
    raise ValueError(f"a 3-D slice has at least 4 chips, found {chips}")
  while grid[0] * grid[1] * (grid[2] if dims == 3 else 1) < chips:
    smallest = min(grid)
    last = max(i for i, d in enumerate(grid) if d == smallest)
    grid[last] *= 2
  return tuple(grid)


def parse_slice(name: str, num_slices: int = 1) -> Slice:
  """'v5e-16' -> Slice; ValueError naming what was expected for anything else."""
  match = re.fullmatch(r"(v4|v5e|v5p|v6e)-(\d+)", str(name).strip().lower())
  if not match:
    raise ValueError(f"--topology: expected a TPU type such as v5e-16, v4-32, v5p-8 or v6e-64 "
                     f"(one of {sorted(CHIPS)} and a count), found {name!r}")
  chip = CHIPS[match.group(1)]
  count = int(match.group(2))
  chips, rest = divmod(count, chip.cores_per_name_unit)
  if rest or chips < 1 or chips & (chips - 1) or chips > chip.max_chips or (
      chip.dims == 3 and chips < 4):
    unit = "TensorCores (2 per chip)" if chip.cores_per_name_unit == 2 else "chips"
    smallest = 4 * chip.cores_per_name_unit if chip.dims == 3 else 1
    raise ValueError(f"--topology {name}: {chip.generation}-N counts {unit}; expected a power of "
                     f"two from {smallest} to {chip.max_chips * chip.cores_per_name_unit}, "
                     f"found {count}")
  if num_slices < 1:
    raise ValueError(f"--num_slices: expected a positive number, found {num_slices}")
  return Slice(f"{chip.generation}-{count}", chip, chips, chip_grid(chips, chip.dims), num_slices)


# libtpu's compiler emits a program's instructions on fibers with small stacks: under the usual
# 8 MiB `ulimit -s`, compiling pretrain:large for v5p-32 overflowed one in the convolution
# emitter (a segmentation fault 3 minutes in, 64 KiB below the fiber's stack top; libtpu
# 0.0.42.1). It compiles with `ulimit -s unlimited`, or with this setting.
FIBER_STACK_BYTES = 8 << 20


def give_libtpu_compiler_stack() -> None:
  """Sets libtpu's fibers_default_thread_stack_size to FIBER_STACK_BYTES in LIBTPU_INIT_ARGS
  unless that variable already names it. libtpu reads it once, when it starts: call this before
  the first TPU client (a run's or a compile-only one) is made."""
  args = os.environ.get("LIBTPU_INIT_ARGS", "")
  if "fibers_default_thread_stack_size" not in args:
    os.environ["LIBTPU_INIT_ARGS"] = (
        f"{args} --fibers_default_thread_stack_size={FIBER_STACK_BYTES}".strip())


def tpu_chips_present() -> bool:
  """Whether this machine has TPU chips (their device files: /dev/accel* on v4 and v5p hosts,
  /dev/vfio/<n> on v5e and v6e hosts)."""
  return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def skip_absent_tpu() -> None:
  """With libtpu installed (the [tpu] extra) on a machine without TPU chips, JAX would start
  libtpu, which prints INVALID_ARGUMENT lines about TPU worker hostnames before JAX falls back
  to the CPU. There, unless JAX_PLATFORMS is set, runs use the CPU (hosts with JAX's CUDA
  plugin are left to JAX's own choice). Call before jax is imported; --mode=compile does not
  (its compile-only client is libtpu's)."""
  if "JAX_PLATFORMS" in os.environ or tpu_chips_present():
    return
  if importlib.util.find_spec("libtpu") is None:
    return
  if any(importlib.util.find_spec(f"jax_cuda{v}_plugin") for v in (12, 13)):
    return
  os.environ["JAX_PLATFORMS"] = "cpu"


def _quiet_libtpu(slice_: Slice) -> None:
  """The environment a TPU VM's metadata server would give libtpu; without it, libtpu prints
  warnings about TPU_ACCELERATOR_TYPE / TPU_WORKER_HOSTNAMES (and an INVALID_ARGUMENT line) at
  start-up, harmless for a compile-only client. Values already set are kept."""
  accelerator = {"v5e": "v5litepod", "v6e": "v6e"}.get(slice_.chip.generation,
                                                         slice_.chip.generation)
  count = slice_.chips * slice_.chip.cores_per_name_unit
  defaults = {"TPU_ACCELERATOR_TYPE": f"{accelerator}-{count}",
              "TPU_WORKER_HOSTNAMES": "localhost", "TPU_WORKER_ID": "0",
              "TPU_SKIP_MDS_QUERY": "1",
              # a compile-only client holds no chip: let several processes load libtpu at once
              # (otherwise the second one fails on /tmp/libtpu_lockfile)
              "ALLOW_MULTIPLE_LIBTPU_LOAD": "1"}
  for key, value in defaults.items():
    os.environ.setdefault(key, value)


def abstract_devices(slice_: Slice) -> list:
  """The slice's chips as abstract (compile-only) TPU devices from libtpu: one device per chip
  (megacore on v4 / v5p). Needs libtpu (pip install -e '.[tpu]'); no TPU is used."""
  try:
    import libtpu  # noqa: F401  (the compile-only TPU client)
  except ImportError:
    raise ValueError("--mode=compile needs libtpu: pip install -e '.[tpu]' (it compiles for TPU "
                     "on any machine; no TPU is needed)") from None
  from jax.experimental import topologies
  _quiet_libtpu(slice_)
  give_libtpu_compiler_stack()
  kwargs = {}
  if slice_.chip.cores_per_name_unit == 2:
    kwargs["chip_config_name"] = "megacore"
  kwargs["chips_per_host_bounds"] = (1, 1, 1) if slice_.chips == 1 else (
      (1, 2, 1) if slice_.chips == 2 else (2, 2, 1))
  if slice_.num_slices > 1:
    kwargs["num_slices"] = slice_.num_slices
  description = topologies.get_topology_desc(topology_name=slice_.topology, platform="tpu",
                                             **kwargs)
  devices = list(description.devices)
  if len(devices) != slice_.total_chips:
    raise ValueError(f"libtpu gave {len(devices)} devices for {slice_.topology} x "
                     f"{slice_.num_slices}, expected {slice_.total_chips}")
  return devices
