"""Digests of arrays, recorded with every checkpoint and checked on every restore.

A digest is two 32-bit words computed from an array's bits on the device that holds it:
  word 0  sum over elements of bits * odd_weight(flat index)        (mod 2**32)
  word 1  sum over elements of mix(bits ^ hash(flat index))         (mod 2**32)
Integer sums wrap exactly and in any order, so the digest is the same for any sharding and any
mesh (a checkpoint written on 16 chips verifies on 1), and computing it moves no array between
devices: the flat index comes from per-axis iotas, not from a reshape. Any single changed element
changes word 0 (its weight is odd, so a non-zero change times it is non-zero mod 2**32); word 1
catches changes that cancel linearly. It guards against storage corruption, not against an
adversary.
"""

import hashlib
import json

import jax
import jax.numpy as jnp

FORMAT = 1
_UNSIGNED = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}


def _words(x):
  """The array's bits as uint32, one word per element (two per element of a 64-bit type)."""
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  if x.dtype.itemsize == 8:
    return jax.lax.bitcast_convert_type(x, jnp.uint32)  # [..., 2]
  return jax.lax.bitcast_convert_type(x, _UNSIGNED[x.dtype.itemsize]).astype(jnp.uint32)


def _flat_index(shape):
  """uint32[shape]: each element's row-major position, from per-axis iotas (no reshape)."""
  index, stride = jnp.zeros(shape, jnp.uint32), 1
  for axis in reversed(range(len(shape))):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride)
    stride = (stride * shape[axis]) % (1 << 32)
  return index


def _mix(h):
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x7FEB352D)
  h = h ^ (h >> 15)
  h = h * jnp.uint32(0x846CA68B)
  return h ^ (h >> 16)


def _digest(x):
  """uint32[2]: the two digest words of one array."""
  w = _words(x)
  i = _flat_index(w.shape)
  weighted = jnp.sum(w * (i * jnp.uint32(0x9E3779B1) | jnp.uint32(1)), dtype=jnp.uint32)
  mixed = jnp.sum(_mix(w ^ _mix(i + jnp.uint32(0x632BE5AB))), dtype=jnp.uint32)
  return jnp.stack([weighted, mixed])


_digests = jax.jit(lambda leaves: [_digest(x) for x in leaves])


def tree_digests(tree, prefix: str = "") -> dict:
  """{name: 16 hex digits} for every array of `tree` (device arrays of any sharding, or host
  numpy arrays); names are jax.tree_util.keystr paths, after `prefix`."""
  named = jax.tree_util.tree_leaves_with_path(tree)
  groups = {}  # one jitted call per set of devices the arrays live on (host arrays: one more)
  for i, (_, x) in enumerate(named):
    devices = (tuple(sorted(d.id for d in x.sharding.device_set))
               if isinstance(x, jax.Array) else None)
    groups.setdefault(devices, []).append(i)
  words = [None] * len(named)
  for members in groups.values():
    for i, w in zip(members, jax.device_get(_digests([named[i][1] for i in members]))):
      words[i] = w
  return {prefix + jax.tree_util.keystr(k): f"{int(w[0]):08x}{int(w[1]):08x}"
          for (k, _), w in zip(named, words)}


def json_digest(value) -> str:
  """sha256 of a JSON-serialisable value (the data-iterator state), key order ignored."""
  return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def manifest(state, data_state=None) -> dict:
  """What a checkpoint records: the digest of every array (and of the iterator state)."""
  out = {"format": FORMAT, "arrays": tree_digests(state)}
  if data_state is not None:
    out["data"] = json_digest(data_state)
  return out


def mismatches(recorded: dict, tree, prefix: str = "") -> list:
  """Names of the arrays of `tree` whose digest differs from `recorded` (a manifest), missing
  ones included; [] when every array verifies."""
  expected = recorded.get("arrays", {})
  found = tree_digests(tree, prefix)
  return [name for name, value in found.items() if expected.get(name) != value]


def describe(names: list) -> str:
  """'<first name> (and N other arrays)'."""
  more = f" (and {len(names) - 1} other array(s))" if len(names) > 1 else ""
  return f"{names[0]}{more}"
