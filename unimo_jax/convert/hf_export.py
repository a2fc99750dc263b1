"""unimo_jax text encoder -> a HF RoBERTa checkpoint (model.safetensors + config.json).

The inverse of convert/roberta.py for everything RoBERTa has: embeddings, layers and the MLM head.
Token types: RoBERTa adds token_type_embeddings[0] to every token; the export writes a zero row and
keeps our position table (which already holds the folded row), which is exact. Image projections,
region heads, poolers and CMCL parameters have no RoBERTa counterpart and are left out.
"""

import json
import pathlib

import numpy as np

from unimo_jax.convert.roberta import name_map
from unimo_jax.model.params import unstack_layers


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return np.asarray(tree, np.float32)


def roberta_state_dict(params, config) -> dict:
  """{HF name: float32 array} for RobertaForMaskedLM from our params (unrolled or scanned)."""
  if "layers" in params.get("encoder", {}):
    params = unstack_layers(params, config.num_layers)
  state = {}
  for name, (path, layout) in name_map(config).items():
    value = _get(params, path)
    state[name] = np.ascontiguousarray(layout[1](value) if layout else value)
  state["roberta.embeddings.position_embeddings.weight"] = _get(
      params, ("text_embeddings", "pos_embedding"))
  state["roberta.embeddings.token_type_embeddings.weight"] = np.zeros(
      (1, config.hidden_size), np.float32)
  state["lm_head.decoder.weight"] = state["roberta.embeddings.word_embeddings.weight"]
  state["lm_head.decoder.bias"] = state["lm_head.bias"]
  return state


def roberta_config(config) -> dict:
  """config.json fields of the equivalent RobertaConfig."""
  return {
      "architectures": ["RobertaForMaskedLM"], "model_type": "roberta",
      "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
      "num_hidden_layers": config.num_layers, "num_attention_heads": config.num_heads,
      "intermediate_size": config.mlp_dim, "hidden_act": "gelu",
      "hidden_dropout_prob": config.dropout_rate,
      "attention_probs_dropout_prob": config.attention_dropout_rate,
      "max_position_embeddings": config.max_position_embeddings, "type_vocab_size": 1,
      "initializer_range": config.initializer_range, "layer_norm_eps": config.layer_norm_eps,
      "pad_token_id": config.pad_token_id, "bos_token_id": 0, "eos_token_id": 2,
      "tie_word_embeddings": True,
  }


def export_roberta(params, config, out_dir) -> pathlib.Path:
  """Writes out_dir/model.safetensors and out_dir/config.json; returns out_dir."""
  from safetensors.numpy import save_file
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  state = roberta_state_dict(params, config)
  state.pop("lm_head.decoder.weight")  # tied to the word embeddings; safetensors refuses aliases
  save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(out / "model.safetensors"),
            metadata={"format": "pt"})
  (out / "config.json").write_text(json.dumps(roberta_config(config), indent=2))
  return out
