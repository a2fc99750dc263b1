"""RoBERTa -> unimo_jax conversion reproduces transformers' MLM logits."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from unimo_jax.convert.roberta import (config_from_roberta, config_from_roberta_dir,  # noqa: E402
                                      load_state_dict, params_from_roberta)
from unimo_jax.model import Unimo  # noqa: E402

LENGTH = 24


def _tiny_roberta(seed=0):
  torch.manual_seed(seed)
  cfg = transformers.RobertaConfig(
      vocab_size=97, hidden_size=48, num_hidden_layers=3, num_attention_heads=4,
      intermediate_size=96, max_position_embeddings=LENGTH + 2, type_vocab_size=1,
      layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2)
  model = transformers.RobertaForMaskedLM(cfg).eval()
  with torch.no_grad():  # non-trivial biases, LN parameters and token-type row
    for name, p in model.named_parameters():
      if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name or "token_type" in name:
        p.add_(0.1 * torch.randn_like(p))
  return cfg, model


def _random_padded_ids(vocab, rng, batch=3):
  ids = rng.integers(3, vocab, size=(batch, LENGTH))
  ids[:, 0] = 0  # [CLS]
  lengths = [LENGTH, LENGTH - 7, 5]
  for row, n in enumerate(lengths):
    ids[row, n - 1] = 2  # [SEP]
    ids[row, n:] = 1  # [PAD]
  return ids, np.arange(LENGTH)[None] < np.array(lengths)[:, None]


def _torch_logits(model, ids):
  with torch.no_grad():
    mask = torch.tensor(ids != 1, dtype=torch.long)
    return model(input_ids=torch.tensor(ids), attention_mask=mask).logits.numpy()


@pytest.mark.parametrize("scan_layers", [False, True])
def test_mlm_logits_match_transformers(scan_layers):
  cfg, model = _tiny_roberta()
  config = config_from_roberta(cfg.to_dict())
  config.scan_layers = scan_layers
  params, report = params_from_roberta(model.state_dict(), config)
  assert report["unused"] == []
  assert "encoder" not in report["fresh"] and "lm_head" not in report["fresh"]
  ids, valid = _random_padded_ids(cfg.vocab_size, np.random.default_rng(1))
  ours = np.asarray(Unimo(config).apply({"params": params}, {"input_ids": ids.astype(np.int32)},
                                        heads={"lm"})["lm_logits"])
  theirs = _torch_logits(model, ids)
  # Real tokens: same math in float32, differences are summation order only.
  assert np.abs(ours[valid] - theirs[valid]).max() < 1e-4
  # Padding rows see the same keys as in transformers (key-padding mask), so they agree too.
  assert np.abs(ours - theirs).max() < 1e-4


def test_safetensors_file_converts_like_state_dict(tmp_path):
  cfg, model = _tiny_roberta(seed=3)
  model.save_pretrained(tmp_path)  # the layout a HF checkpoint directory has
  assert (tmp_path / "model.safetensors").exists()
  loaded = load_state_dict(tmp_path)  # directory -> model.safetensors, read with numpy only
  config = config_from_roberta_dir(tmp_path)  # config.json written by save_pretrained
  assert (config.num_layers, config.hidden_size, config.mlp_dim, config.max_position_embeddings,
          config.layer_norm_eps) == (3, 48, 96, LENGTH + 2, 1e-5)
  from_file, _ = params_from_roberta(loaded, config)
  from_dict, _ = params_from_roberta(model.state_dict(), config)
  import jax
  for a, b in zip(jax.tree.leaves(from_file), jax.tree.leaves(from_dict)):
    np.testing.assert_array_equal(a, b)


def test_missing_and_misshaped_weights_are_named():
  cfg, model = _tiny_roberta()
  config = config_from_roberta(cfg.to_dict())
  state = dict(model.state_dict())
  del state["roberta.encoder.layer.1.output.dense.weight"]
  with pytest.raises(ValueError, match=r"layer\.1\.output\.dense\.weight"):
    params_from_roberta(state, config)
  state = dict(model.state_dict())
  state["lm_head.dense.weight"] = torch.zeros(5, 5)
  with pytest.raises(ValueError, match=r"lm_head/mask_lm_trans_fc/kernel: expected shape \(48, 48\)"):
    params_from_roberta(state, config)
