"""Pickled weights read without running code from the file.

A pickle names the callables that rebuild its objects, so `pickle.load` on an untrusted file can
run anything. These readers admit only what a weights file needs and refuse everything else with
`UnsafePickleError` naming the offending global:

  * `load_torch_zip(path)`: a `torch.save` zip archive (pytorch_model.bin) -> {name: np.ndarray},
    no torch needed. Admitted: torch's `_rebuild_tensor_v2` / `_rebuild_parameter`, the typed
    storage classes, `collections.OrderedDict`; tensor bytes come from the archive's data/ entries.
  * `load_numpy_pickle(path)`: a pickle of (nested dicts / lists of) numpy arrays, as Paddle 2.x
    `.pdparams` files are -> the same structure. Admitted: numpy's array and dtype reconstruction
    (object dtypes refused), `collections.OrderedDict`, and `_codecs.encode` limited to latin-1
    (protocol 2 stores bytes that way).
"""

import collections
import io
import pathlib
import pickle
import zipfile

import numpy as np


class UnsafePickleError(ValueError):
  """The pickle asks for something a weights file has no reason to contain."""


_TORCH_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    "BFloat16Storage": "bfloat16",
}


def _bfloat16_to_float32(raw: bytes) -> np.ndarray:
  bits = np.frombuffer(raw, np.uint16).astype(np.uint32) << 16
  return bits.view(np.float32)


def _rebuild_tensor(storage, offset, size, stride, *_):
  """torch._utils._rebuild_tensor_v2 -> a numpy array (a copy, in the tensor's own layout)."""
  size, stride = tuple(size), tuple(stride)
  if any(n == 0 for n in size):
    return np.zeros(size, storage.dtype)
  needed = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
  if offset < 0 or any(s < 0 for s in stride) or needed > storage.size:
    raise UnsafePickleError(f"tensor of size {size} and stride {stride} at offset {offset} needs "
                            f"{needed} elements; its storage has {storage.size}")
  itemsize = storage.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size,
                                         strides=tuple(s * itemsize for s in stride))
  return np.array(view)


def _rebuild_parameter(data, *_):
  return data


class _Restricted(pickle.Unpickler):
  allowed: dict = {}
  source = ""

  def find_class(self, module, name):
    key = f"{module}.{name}"
    if key not in self.allowed:
      raise UnsafePickleError(f"{self.source}: refusing to load global {key!r}; a weights file "
                              f"may only use {sorted(self.allowed)}")
    return self.allowed[key]


class _TorchUnpickler(_Restricted):
  allowed = {
      "collections.OrderedDict": collections.OrderedDict,
      "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
      "torch._utils._rebuild_parameter": _rebuild_parameter,
      **{f"torch.{name}": name for name in _TORCH_STORAGE_DTYPES},
  }

  def __init__(self, file, archive, prefix, source):
    super().__init__(file)
    self.archive, self.prefix, self.source = archive, prefix, source
    self.storages = {}

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
            and pid[1] in _TORCH_STORAGE_DTYPES):
      raise UnsafePickleError(f"{self.source}: expected a ('storage', <type>, key, location, "
                              f"numel) reference, found {pid!r}")
    _, kind, key, _, numel = pid
    if key not in self.storages:
      entry = f"{self.prefix}data/{key}"
      try:
        raw = self.archive.read(entry)
      except KeyError:
        raise UnsafePickleError(f"{self.source}: storage {entry} is missing from the archive") from None
      dtype = _TORCH_STORAGE_DTYPES[kind]
      array = _bfloat16_to_float32(raw) if dtype == "bfloat16" else np.frombuffer(raw, dtype)
      if array.size < numel:
        raise UnsafePickleError(f"{self.source}: storage {entry} holds {array.size} elements, "
                                f"expected {numel}")
      self.storages[key] = array
    return self.storages[key]


def load_torch_zip(path, nested_key: str | None = None) -> dict:
  """{name: np.ndarray} from a torch.save zip archive, without torch and without running code.
  nested_key: when the archive holds {nested_key: state dict, ...} (a detectron2 checkpoint
  holds {'model': ...}), that state dict; the other entries are ignored."""
  path = pathlib.Path(path)
  if not zipfile.is_zipfile(path):
    raise ValueError(f"{path}: expected a torch.save zip archive (torch >= 1.6); legacy "
                     "non-zip checkpoints are not supported, re-save them with a recent torch")
  with zipfile.ZipFile(path) as archive:
    pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
    if len(pickles) != 1:
      raise ValueError(f"{path}: expected one <name>/data.pkl in the archive, found {pickles}")
    prefix = pickles[0][:-len("data.pkl")]
    unpickler = _TorchUnpickler(io.BytesIO(archive.read(pickles[0])), archive, prefix, str(path))
    state = unpickler.load()
  if nested_key and isinstance(state, dict) and isinstance(state.get(nested_key), dict):
    state = state[nested_key]
  if not isinstance(state, dict):
    raise ValueError(f"{path}: expected a state dict (name -> tensor), found {type(state).__name__}")
  bad = [k for k, v in state.items() if not isinstance(v, np.ndarray)]
  if bad:
    raise ValueError(f"{path}: expected tensors only, found other values under {bad[:5]}")
  return dict(state)


def _safe_dtype(*args):
  dtype = np.dtype(*args)
  if dtype.hasobject:
    raise UnsafePickleError(f"refusing an object dtype {dtype!r} in a weights file")
  return dtype


def _array_reconstruct(subtype, shape, dtype):
  if subtype is not np.ndarray:
    raise UnsafePickleError(f"refusing array subtype {subtype!r}")
  return np.ndarray.__new__(np.ndarray, shape, _safe_dtype(dtype))


def _scalar(dtype, data=None):
  dtype = _safe_dtype(dtype)
  return np.frombuffer(data, dtype, count=1)[0]


def _latin1_bytes(text, encoding="utf-8"):
  """_codecs.encode as protocol-2 pickles use it for bytes: str -> latin-1 bytes, nothing else."""
  if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
    raise UnsafePickleError(f"refusing _codecs.encode({type(text).__name__}, {encoding!r})")
  return text.encode("latin-1")


class _NumpyUnpickler(_Restricted):
  allowed = {
      "collections.OrderedDict": collections.OrderedDict,
      "_codecs.encode": _latin1_bytes,
      "numpy.ndarray": np.ndarray,
      "numpy.dtype": _safe_dtype,
      "numpy.core.multiarray._reconstruct": _array_reconstruct,
      "numpy._core.multiarray._reconstruct": _array_reconstruct,
      "numpy.core.multiarray.scalar": _scalar,
      "numpy._core.multiarray.scalar": _scalar,
  }

  def __init__(self, file, source):
    super().__init__(file)
    self.source = source


def load_numpy_pickle(path):
  """The arrays of a pickle of numpy arrays (e.g. Paddle .pdparams), without running code."""
  path = pathlib.Path(path)
  with open(path, "rb") as f:
    tree = _NumpyUnpickler(f, str(path)).load()
  _check_arrays(tree, str(path))
  return tree


def _check_arrays(tree, where):
  """Only containers of numeric arrays and numbers (an array's state may carry any dtype)."""
  if isinstance(tree, dict):
    for key, value in tree.items():
      _check_arrays(value, f"{where}[{key!r}]")
  elif isinstance(tree, (list, tuple)):
    for i, value in enumerate(tree):
      _check_arrays(value, f"{where}[{i}]")
  elif isinstance(tree, (np.ndarray, np.generic)):
    if tree.dtype.hasobject:
      raise UnsafePickleError(f"{where}: refusing an object dtype {tree.dtype!r} in a weights file")
  elif not isinstance(tree, (int, float, str, bytes, bool, type(None))):
    raise UnsafePickleError(f"{where}: expected arrays, found {type(tree).__name__}")
