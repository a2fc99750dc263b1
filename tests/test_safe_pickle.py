"""Pickled weights load without running code; torch .bin archives read without torch."""

import pickle
import zipfile

import numpy as np
import pytest

from unimo_jax.convert.safe_pickle import UnsafePickleError, load_numpy_pickle, load_torch_zip

torch = pytest.importorskip("torch")


class _RunsCode:
  """A pickle payload that would create `marker` when loaded by plain pickle."""

  def __init__(self, marker):
    self.marker = str(marker)

  def __reduce__(self):
    import os
    return os.system, (f"touch {self.marker}",)


def test_torch_archive_reads_exactly_without_torch(tmp_path):
  g = torch.Generator().manual_seed(0)
  state = {
      "f32": torch.randn(3, 4, generator=g),
      "f16": torch.randn(5, generator=g).half(),
      "bf16": torch.randn(2, 3, generator=g).bfloat16(),
      "i64": torch.arange(7),
      "transposed": torch.randn(4, 3, generator=g).t(),  # non-contiguous strides
      "slice": torch.randn(6, 4, generator=g)[2:5, 1:],  # storage offset + strides
      "scalar": torch.tensor(2.5),
      "param": torch.nn.Parameter(torch.randn(2, generator=g)),
      "empty": torch.zeros(0, 3),
  }
  torch.save(state, tmp_path / "pytorch_model.bin")
  ours = load_torch_zip(tmp_path / "pytorch_model.bin")
  assert sorted(ours) == sorted(state)
  for name, tensor in state.items():
    want = tensor.detach().float().numpy() if tensor.dtype == torch.bfloat16 else tensor.detach().numpy()
    assert ours[name].shape == want.shape and ours[name].dtype == want.dtype, name
    np.testing.assert_array_equal(ours[name], want, err_msg=name)


def test_malicious_pickles_are_refused_and_nothing_runs(tmp_path):
  marker = tmp_path / "ran"
  payload = pickle.dumps({"weight": np.ones(2), "evil": _RunsCode(marker)}, protocol=2)
  (tmp_path / "model.pdparams").write_bytes(payload)
  with pytest.raises(UnsafePickleError, match=r"refusing to load global '(posix|os|nt)\.system'"):
    load_numpy_pickle(tmp_path / "model.pdparams")
  # The same payload as the data.pkl of a torch-style archive.
  with zipfile.ZipFile(tmp_path / "pytorch_model.bin", "w") as z:
    z.writestr("archive/data.pkl", pickle.dumps({"evil": _RunsCode(marker)}))
  with pytest.raises(UnsafePickleError, match=r"(posix|os|nt)\.system"):
    load_torch_zip(tmp_path / "pytorch_model.bin")
  assert not marker.exists()
  # Object arrays could smuggle arbitrary objects: refused as well.
  (tmp_path / "objects.pdparams").write_bytes(pickle.dumps({"w": np.array([1, "a"], object)}))
  with pytest.raises(UnsafePickleError, match="object dtype"):
    load_numpy_pickle(tmp_path / "objects.pdparams")


@pytest.mark.parametrize("protocol", [2, 4])
def test_numpy_pickles_such_as_pdparams_load(tmp_path, protocol):
  rng = np.random.default_rng(0)
  state = {"word_embedding": rng.normal(size=(5, 3)).astype(np.float32),
           "encoder_layer_0_ffn_fc_0.b_0": rng.normal(size=4).astype(np.float16),
           "ids": np.arange(6, dtype=np.int64).reshape(2, 3), "step": np.float32(3.0)}
  (tmp_path / "m.pdparams").write_bytes(pickle.dumps(state, protocol=protocol))
  loaded = load_numpy_pickle(tmp_path / "m.pdparams")
  assert sorted(loaded) == sorted(state)
  for name, value in state.items():
    assert np.asarray(loaded[name]).dtype == np.asarray(value).dtype
    np.testing.assert_array_equal(loaded[name], value)
