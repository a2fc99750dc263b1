"""Device mesh and the logical-axis rules that map model axis names onto it."""

from typing import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the global batch is split over both

# One table for parameters and activations. Order matters: a mesh axis already taken by an earlier
# name of the same array is skipped, so activations [batch, length, embed] put batch on
# (data, fsdp) and leave embed whole, while parameters [embed, mlp] put embed on fsdp.
DEFAULT_LOGICAL_AXIS_RULES = (
    ("batch", BATCH_AXES),
    ("length", None),
    # The word-embedding table is split along embed (fsdp) only: split along vocab as well (both
    # mesh axes at once), XLA's SPMD partitioner in jax 0.10.2 produced wrong gradients for the
    # gather + tied-output pair on a (2, 2, 2) mesh (tests/test_train.py guards this).
    ("vocab", None),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("embed", "fsdp"),
    ("kv", None),
    ("layers", None),
    ("position_table", None),
    ("region_feature", None),
    ("location", None),
    ("region_classes", None),
    ("classes", None),  # task-head outputs (labels, answers, match score)
    ("patch", None),
    ("contrastive", None),
)


def resolve_mesh_shape(shape: Mapping[str, int] | Sequence, num_devices: int) -> dict:
  """{'data': d, 'fsdp': f, 'tensor': t} with one -1 entry replaced by the remaining devices."""
  shape = dict(shape)
  unknown = sorted(set(shape) - set(MESH_AXES))
  if unknown:
    raise ValueError(f"mesh: expected axes from {MESH_AXES}, found unknown {unknown}")
  shape = {axis: int(shape.get(axis, 1)) for axis in MESH_AXES}
  free = [axis for axis, size in shape.items() if size == -1]
  if len(free) > 1:
    raise ValueError(f"mesh: at most one axis may be -1, found {free} in {shape}")
  fixed = int(np.prod([size for size in shape.values() if size != -1]))
  if free:
    if fixed <= 0 or num_devices % fixed:
      raise ValueError(f"mesh {shape}: the fixed axes (product {fixed}) must divide the "
                       f"{num_devices} devices")
    shape[free[0]] = num_devices // fixed
  if int(np.prod(list(shape.values()))) != num_devices:
    raise ValueError(f"mesh {shape}: expected the axis sizes to multiply to the {num_devices} "
                     f"available devices, found {int(np.prod(list(shape.values())))}")
  return shape


def make_mesh(shape: Mapping[str, int] | Sequence = (("data", -1),), devices=None) -> Mesh:
  """A ('data', 'fsdp', 'tensor') mesh with Auto axis types (GSPMD-style sharding). Devices of
  several TPU slices (multi-slice) are laid out with 'data' across the slices, over DCN, and
  every other axis inside a slice, over ICI."""
  devices = jax.devices() if devices is None else list(devices)
  sizes = resolve_mesh_shape(shape, len(devices))
  axis_types = (AxisType.Auto,) * len(MESH_AXES)
  slices = len({getattr(d, "slice_index", 0) for d in devices})
  if slices == 1:
    return jax.make_mesh(tuple(sizes[a] for a in MESH_AXES), MESH_AXES, axis_types=axis_types,
                         devices=devices)
  if sizes["data"] % slices:
    raise ValueError(f"mesh {sizes}: with {slices} slices the data axis carries the slices "
                     f"(over DCN), so it must be a multiple of {slices}, found {sizes['data']}")
  from jax.experimental import mesh_utils
  ici = (sizes["data"] // slices, sizes["fsdp"], sizes["tensor"])
  grid = mesh_utils.create_hybrid_device_mesh(ici, (slices, 1, 1), devices)
  return Mesh(grid, MESH_AXES, axis_types=axis_types)


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
  """Leading (batch) dimension split over BATCH_AXES, the rest whole."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def logical_to_sharding(tree, mesh: Mesh, rules=DEFAULT_LOGICAL_AXIS_RULES):
  """NamedShardings for a tree of boxed (nn.Partitioned) values, e.g. abstract parameters."""
  import flax.linen as nn  # local: keep this module importable without flax for launch tools
  return nn.logical_to_mesh_sharding(nn.get_partition_spec(tree), mesh, rules)


def rules_from_config(rules) -> tuple:
  """The config's [[name, axes], ...] table as the tuple-of-tuples flax expects."""
  out = []
  for rule in rules:
    if len(rule) != 2:
      raise ValueError(f"logical_axis_rules: expected [name, mesh_axes] pairs, found {rule!r}")
    name, axes = rule
    out.append((name, tuple(axes) if isinstance(axes, (list, tuple)) else axes))
  return tuple(out)


def parameter_table(params, shardings, expand=()) -> str:
  """One line per top-level parameter group (per sub-group of the groups named in `expand`):
  scalar count and the sharding of its largest leaf. params: (abstract) parameters, boxed or
  plain; shardings: the matching NamedSharding tree."""
  from unimo_jax.model.params import count_params, strip_boxes
  params = strip_boxes(params)
  groups = []
  for name in sorted(params):
    if name in expand:
      groups += [(f"{name}/{sub}", params[name][sub], shardings[name][sub])
                 for sub in sorted(params[name])]
    else:
      groups.append((name, params[name], shardings[name]))
  lines = [f"{'group':<28}{'parameters':>14}  largest leaf sharding"]
  for name, tree, tree_shardings in groups:
    leaves = jax.tree.leaves(tree)
    if not leaves:
      continue
    specs = jax.tree.leaves(tree_shardings, is_leaf=lambda s: hasattr(s, "spec"))
    biggest = max(range(len(leaves)), key=lambda i: np.prod(leaves[i].shape))
    lines.append(f"{name:<28}{count_params(tree):>14,}  "
                 f"{tuple(leaves[biggest].shape)} {specs[biggest].spec}")
  lines.append(f"{'total':<28}{count_params(params):>14,}")
  return "\n".join(lines)


# Mesh axes that split parameters (the 'data' axis only replicates them).
PARAMETER_AXES = ("fsdp", "tensor")


def sharding_excess(abstract, shardings, mesh) -> dict:
  """How far per-device bytes of `abstract` (e.g. params + optimizer state) placed as
  `shardings` exceed an even split over the parameter-sharding axes (fsdp x tensor):
  {'per_device', 'even', 'excess' (fraction over even), 'largest_replicated' (name, bytes)}."""
  import jax.tree_util as tu
  split = int(np.prod([mesh.shape[a] for a in PARAMETER_AXES]))
  total = per_device = 0
  largest = ("", 0)
  flat_shardings = jax.tree.leaves(shardings, is_leaf=lambda s: hasattr(s, "spec"))
  for (path, leaf), sharding in zip(tu.tree_leaves_with_path(abstract), flat_shardings):
    size = int(np.prod(leaf.shape, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
    shard = int(np.prod(sharding.shard_shape(leaf.shape), dtype=np.int64)) * np.dtype(
        leaf.dtype).itemsize
    total += size
    per_device += shard
    if shard * split > size and shard > largest[1]:
      largest = (tu.keystr(path), shard)
  even = total / split
  return {"per_device": per_device, "even": even, "excess": per_device / even - 1.0,
          "largest_replicated": largest}


def check_sufficiently_sharded(abstract, shardings, mesh, tolerance: float) -> None:
  """ValueError when parameters + optimizer state per device exceed an even split over fsdp x
  tensor by more than `tolerance` (MaxText's assert_params_sufficiently_sharded): a rule that
  leaves big kernels replicated would otherwise only show as an out-of-memory on the pod."""
  found = sharding_excess(abstract, shardings, mesh)
  if found["excess"] > tolerance:
    name, size = found["largest_replicated"]
    raise ValueError(
        f"sharding: {found['per_device'] / 2 ** 20:.1f} MiB of parameters and optimizer state "
        f"per device, {100 * found['excess']:.0f} % over an even split across fsdp x tensor "
        f"({found['even'] / 2 ** 20:.1f} MiB; sharding_tolerance {100 * tolerance:.0f} %); the "
        f"largest array not split that way is {name} ({size / 2 ** 20:.2f} MiB per device); "
        "check logical_axis_rules")
