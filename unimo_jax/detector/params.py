"""Random detector parameters in the converted layout: the converter applied to a random state
dict, so tests, benchmarks and compile reports run exactly the tree a real checkpoint gives."""

from unimo_jax.detector.config import DetectorConfig


def random_params(config: DetectorConfig, seed: int = 0, layout: str = "milvlg") -> dict:
  from unimo_jax.convert.detector import params_from_state_dict, random_state_dict
  params, _ = params_from_state_dict(random_state_dict(config, layout, seed), config, layout)
  return params
