"""The wheel: built from this tree and installed non-editable, `python -m unimo_jax.main
--config=configs/pretrain.py:tiny` runs from any directory (the configs ship inside it)."""

import os
import shutil
import subprocess
import sys

import pytest

from train_helpers import ROOT, small_run_overrides
from unimo_jax import main


def test_config_arguments_resolve_to_the_shipped_configs(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # no configs/ here
  resolved = main.resolved_config_argument("--config=configs/caption.py:tiny")
  assert resolved == f"--config={ROOT / 'configs' / 'caption.py'}:tiny"
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "caption.py").write_text("")  # the user's own file wins
  assert main.resolved_config_argument("--config=configs/caption.py:tiny") == (
      "--config=configs/caption.py:tiny")
  for arg in ("--config=other/caption.py:tiny", "--config.steps=3", "--workdir=configs/x.py:1",
              "--config=configs/missing.py:tiny"):
    assert main.resolved_config_argument(arg) == arg


@pytest.mark.slow
def test_the_installed_wheel_runs_the_default_config_from_any_directory(tmp_path, run_scenes):
  wheels, site, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
  elsewhere.mkdir()
  # built from a copy of what the wheel takes, so no build/ folder is left in (or reused from)
  # the checkout
  source = tmp_path / "source"
  for name in ("unimo_jax", "configs"):
    shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
  for path in [ROOT / "setup.py", ROOT / "README.md", *ROOT.glob("requirements*.txt")]:
    shutil.copy(path, source / path.name)
  pip = [sys.executable, "-m", "pip", "-q"]
  subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                  str(source)], check=True, timeout=300, capture_output=True)
  (wheel,) = wheels.glob("unimo_jax-*.whl")
  subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True,
                 timeout=300, capture_output=True)
  # the wheel's package, not this checkout's (PYTHONPATH comes before the editable install)
  env = dict(os.environ, PYTHONPATH=str(site), JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1")
  where = subprocess.run([sys.executable, "-c", "import unimo_jax; print(unimo_jax.__file__)"],
                         cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
  assert where.stdout.strip() == str(site / "unimo_jax" / "__init__.py")
  assert (site / "unimo_jax" / "configs" / "pretrain.py").exists()
  result = subprocess.run(
      [sys.executable, "-m", "unimo_jax.main", "--config=configs/pretrain.py:tiny",
       f"--workdir={tmp_path / 'w'}", *small_run_overrides(run_scenes, 2)],
      cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  config = (tmp_path / "w" / "config.json").read_text()
  assert '"preset": "tiny"' in config and (tmp_path / "w" / "checkpoints" / "2").is_dir()
