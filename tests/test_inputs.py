"""Bad input fails before tracing with a ValueError naming the field, expected and found shape."""

import jax
import numpy as np
import pytest

from unimo_jax.data.synthetic.random_batch import random_regions, random_text
from unimo_jax.model import Unimo, init_params, model_config


@pytest.fixture(scope="module")
def model_and_params():
  config = model_config("tiny")
  return Unimo(config), init_params(config, jax.random.key(0)), config


def _pair(config):
  rng = np.random.default_rng(0)
  return dict(random_regions(config, rng, 2, 5), input_ids=random_text(config, rng, 2, 8))


def _apply(model_and_params, batch, **kw):
  model, params, _ = model_and_params
  return model.apply({"params": params}, batch, **kw)


def test_missing_field(model_and_params):
  batch = _pair(model_and_params[2])
  del batch["region_locations"]
  with pytest.raises(ValueError, match=r"batch\['region_locations'\]: missing"):
    _apply(model_and_params, batch)


def test_wrong_feature_dimension(model_and_params):
  batch = _pair(model_and_params[2])
  batch["region_features"] = np.zeros((2, 5, 2048), np.float32)  # tiny expects 32
  with pytest.raises(ValueError, match=r"batch\['region_features'\]: expected shape \[2, \*, 32\] "
                                       r".*found \[2, 5, 2048\]"):
    _apply(model_and_params, batch)


def test_sequence_longer_than_position_table(model_and_params):
  config = model_config("tiny")  # 130 positions, offset 2 -> at most 128 tokens
  batch = {"input_ids": np.full((1, 129), 5, np.int32)}
  with pytest.raises(ValueError, match=r"batch\['input_ids'\]: expected length <= 128 .*"
                                       r"found shape \[1, 129\]"):
    _apply(model_and_params, batch)
  assert config.max_position_embeddings == 130


def test_mismatched_batch_sizes_and_types(model_and_params):
  config = model_config("tiny")
  batch = _pair(config)
  batch["input_ids"] = batch["input_ids"][:1]
  with pytest.raises(ValueError, match=r"batch\['region_features'\]: expected shape \[1, \*, 32\]"):
    _apply(model_and_params, batch)
  with pytest.raises(ValueError, match=r"batch\['input_ids'\]: expected an integer array, found "
                                       r"dtype float32"):
    _apply(model_and_params, {"input_ids": np.ones((1, 4), np.float32)})
  with pytest.raises(ValueError, match=r"batch\['region_mask'\]: expected shape \[2, 5\]"):
    _apply(model_and_params, dict(_pair(config), region_mask=np.ones((2, 4), bool)))


def test_mask_kind_needs_its_fields(model_and_params):
  config = model_config("tiny")
  batch = _pair(config)
  with pytest.raises(ValueError, match=r"batch\['target_mask'\]: required for mask_kind 'seq2seq'"):
    _apply(model_and_params, batch, mask_kind="seq2seq")
  text = {"input_ids": batch["input_ids"], "target_mask": np.zeros((2, 8), bool)}
  with pytest.raises(ValueError, match="mask_kind 'caption' needs an image"):
    _apply(model_and_params, text, mask_kind="caption")
  with pytest.raises(ValueError, match="expected text .* and/or an image"):
    _apply(model_and_params, {"lm_labels": np.zeros((2, 3), np.int32)})


def test_validation_runs_under_jit(model_and_params):
  model, params, config = model_and_params
  batch = _pair(config)
  batch["region_features"] = np.zeros((2, 5, 31), np.float32)
  with pytest.raises(ValueError, match="region_feature_dim=32"):
    jax.jit(lambda b: model.apply({"params": params}, b))(batch)
