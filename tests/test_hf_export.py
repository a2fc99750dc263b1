"""Our text encoder exported to HF RoBERTa format loads in transformers and reproduces it."""

import json

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from test_convert_roberta import _random_padded_ids, _tiny_roberta, _torch_logits  # noqa: E402
from unimo_jax.convert.hf_export import export_roberta  # noqa: E402
from unimo_jax.convert.roberta import (config_from_roberta, load_state_dict,  # noqa: E402
                                      params_from_roberta)
from unimo_jax.model import Unimo, init_params  # noqa: E402


@pytest.mark.parametrize("scan_layers", [False, True])
def test_export_reimports_identically_and_transformers_reproduces_it(tmp_path, scan_layers):
  cfg, model = _tiny_roberta(seed=7)
  config = config_from_roberta(cfg.to_dict())
  config.scan_layers = scan_layers
  params, report = params_from_roberta(model.state_dict(), config)
  export_roberta(params, config, tmp_path)
  # Export -> import gives back every converted parameter exactly.
  again, _ = params_from_roberta(load_state_dict(tmp_path), config)
  for group in ("text_embeddings", "encoder", "lm_head"):
    for a, b in zip(jax.tree.leaves(params[group]), jax.tree.leaves(again[group])):
      np.testing.assert_array_equal(a, b)
  # transformers loads the export and computes what the original model computes.
  loaded = transformers.RobertaForMaskedLM.from_pretrained(tmp_path).eval()
  ids, valid = _random_padded_ids(cfg.vocab_size, np.random.default_rng(3))
  np.testing.assert_allclose(_torch_logits(loaded, ids)[valid], _torch_logits(model, ids)[valid],
                             atol=1e-5)  # token-type row moved into the positions: rounding only
  assert json.loads((tmp_path / "config.json").read_text())["num_hidden_layers"] == 3


def test_a_trained_encoder_exports_what_our_model_computes(tmp_path):
  """Random (not RoBERTa-derived) params: transformers' logits equal our model's."""
  cfg, _ = _tiny_roberta()
  config = config_from_roberta(cfg.to_dict())
  params = init_params(config, jax.random.key(1))
  params = jax.tree.map(lambda x: np.asarray(x) + 0.05 * np.random.default_rng(0).normal(
      size=np.shape(x)).astype(np.float32), params)  # non-trivial biases and LayerNorms
  export_roberta(params, config, tmp_path)
  loaded = transformers.RobertaForMaskedLM.from_pretrained(tmp_path).eval()
  ids, valid = _random_padded_ids(cfg.vocab_size, np.random.default_rng(4))
  ours = np.asarray(Unimo(config).apply({"params": params}, {"input_ids": ids.astype(np.int32)},
                                        heads={"lm"})["lm_logits"])
  assert np.abs(ours[valid] - _torch_logits(loaded, ids)[valid]).max() < 1e-4
