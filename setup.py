"""Install unimo_jax: `pip install -e .` (runtime), `pip install -e .[tpu]` (libtpu: TPU VMs and
--mode=compile anywhere) or `pip install -e .[test]` (the test suite's extras, libtpu included)."""
import pathlib

from setuptools import find_packages, setup


def _requirements(name):
  lines = pathlib.Path(__file__).with_name(name).read_text().splitlines()
  return [l.strip() for l in lines if l.strip() and not l.startswith(("#", "-r"))]


setup(
    name="unimo_jax",
    version="0.1.0",
    description="UNIMO (unified-modal understanding and generation) in JAX/Flax",
    long_description=pathlib.Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # configs/ ships inside the package as unimo_jax.configs (main.py finds it from any directory)
    packages=find_packages(include=["unimo_jax", "unimo_jax.*"]) + ["unimo_jax.configs"],
    package_dir={"unimo_jax.configs": "configs"},
    install_requires=_requirements("requirements.txt"),
    extras_require={"test": _requirements("requirements-test.txt"),
                    "demo": _requirements("requirements-demo.txt"),
                    "tpu": _requirements("requirements-tpu.txt"),
                    # gs:// workdirs and data: etils.epath's GCS backend, TensorBoard on GCS
                    "gcs": ["etils[epath-gcs]", "google-cloud-storage"]},
)
