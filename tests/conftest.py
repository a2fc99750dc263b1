"""Test setup: 8 simulated CPU devices, configured before JAX initialises its backend; a
persistent compilation cache shared by the suite and the processes it starts; session fixtures
for the data every module would otherwise generate again."""

import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Compiled programs are kept on disk, so the same step compiled by another test, by a run the
# test starts in a subprocess (which inherits these variables) or by the next pytest run is
# read back instead of compiled again. Programs that compile in under 0.1 s are not worth a file.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)


@pytest.fixture(scope="session")
def scenes(tmp_path_factory):
  """A small synthetic-scenes directory (200 pairs, 32-d regions, seed 0) shared by every test
  that fine-tunes or evaluates on the synthetic tasks; each task writes its own data beside the
  scenes once (tasks/<task>/) and later tests read it back."""
  from unimo_jax.data.synthetic.scene_dataset import ensure_synthetic_scenes
  return ensure_synthetic_scenes(tmp_path_factory.mktemp("scenes") / "synthetic_scenes",
                                 pairs=200, feature_dim=32, seed=0)


@pytest.fixture(scope="session")
def run_scenes(tmp_path_factory):
  """The synthetic scenes the small command-line runs train on (train_helpers.small_run_overrides:
  400 pairs with the tiny preset's region size and seed), generated once for the session."""
  from train_helpers import config_from_file, small_run_pairs
  from unimo_jax.data.synthetic.scene_dataset import ensure_synthetic_scenes
  tiny = config_from_file("pretrain", "tiny")
  return ensure_synthetic_scenes(tmp_path_factory.mktemp("run_scenes") / "synthetic_scenes",
                                 pairs=small_run_pairs(), seed=tiny.seed,
                                 feature_dim=tiny.model.region_feature_dim)
