"""HF RoBERTa (`RobertaForMaskedLM` / `RobertaModel` state dict) -> unimo_jax parameters.

UNIMO was initialised from RoBERTa; the layouts match one to one (spec §5.2) with three twists:
  * torch Linear weights are [out, in]; Flax kernels are [in, out] (attention ones [in, heads, kv]);
  * RoBERTa adds token_type_embeddings[0] to every token; UNIMO has no token types, so that constant
    row is folded into every position embedding (exact: both are added before the LayerNorm);
  * parameters RoBERTa lacks (image projections, region heads, poolers, CMCL) keep their fresh init.
Input: a mapping name -> array (numpy or torch tensors) or a `.safetensors` path (no torch needed).
"""

import json
import pathlib
import re

import jax
import numpy as np

from unimo_jax.convert.safe_pickle import load_torch_zip
from unimo_jax.model.params import init_params, stack_layers
from unimo_jax.model.presets import model_config


def _numpy(value):
  if hasattr(value, "detach"):  # a torch tensor
    value = value.detach().cpu().float().numpy() if value.is_floating_point() else value.numpy()
  return np.asarray(value)


def load_state_dict(path, nested_key: str | None = None) -> dict:
  """Reads a .safetensors file or a torch .bin zip archive to numpy, neither needing torch; the
  .bin pickle goes through a restricted unpickler that admits only tensor storage. nested_key:
  see safe_pickle.load_torch_zip (a detectron2 checkpoint's 'model')."""
  path = pathlib.Path(path)
  if path.is_dir():
    for name in ("model.safetensors", "pytorch_model.bin"):
      if (path / name).exists():
        return load_state_dict(path / name, nested_key)
    raise FileNotFoundError(f"{path}: expected model.safetensors or pytorch_model.bin inside")
  if path.suffix == ".safetensors":
    from safetensors.numpy import load_file
    return load_file(str(path))
  if path.suffix in (".bin", ".pt", ".pth"):
    return load_torch_zip(path, nested_key)
  raise ValueError(f"{path}: expected a .safetensors or .bin file, found suffix {path.suffix!r}")


def bert_style_config(fields: dict, source: str, base: str = "base"):
  """Our model config from BERT-style config keys (num_hidden_layers, hidden_size, ...), shared by
  HF RoBERTa's config.json and UNIMO's JSON; other fields from preset `base`."""
  c = model_config(base)
  if fields.get("hidden_act", "gelu") != "gelu":
    raise ValueError(f"{source} hidden_act: expected 'gelu', found {fields['hidden_act']!r}")
  c.num_layers = fields["num_hidden_layers"]
  c.hidden_size = fields["hidden_size"]
  c.num_heads = fields["num_attention_heads"]
  c.mlp_dim = fields.get("intermediate_size", 4 * fields["hidden_size"])
  c.vocab_size = fields["vocab_size"]
  c.max_position_embeddings = fields["max_position_embeddings"]
  c.pad_token_id = fields.get("pad_token_id", 1)
  c.layer_norm_eps = fields.get("layer_norm_eps", 1e-5)
  c.dropout_rate = fields.get("hidden_dropout_prob", 0.1)
  c.attention_dropout_rate = fields.get("attention_probs_dropout_prob", 0.1)
  c.initializer_range = fields.get("initializer_range", 0.02)
  return c


def config_from_roberta(hf_config: dict, base: str = "base"):
  """Our model config from a HF RobertaConfig dict (config.json), other fields from preset `base`."""
  return bert_style_config(hf_config, "config.json", base)


def config_from_roberta_dir(path):
  return config_from_roberta(json.loads((pathlib.Path(path) / "config.json").read_text()))


# A layout is (HF -> ours, ours -> HF); None means the arrays are stored alike.
_TRANSPOSED = (np.transpose, np.transpose)  # torch Linear [out, in] <-> Flax kernel [in, out]


def _layer_map(i, heads, head_dim):
  """HF name -> (our path, layout) for layer i."""
  p = f"roberta.encoder.layer.{i}."
  ours = ("encoder", f"layer_{i}")
  hidden = heads * head_dim
  to_hf_kernel = lambda k: k.reshape(hidden, hidden).T  # [in, ..] / [.., out] -> [out, in]
  qkv_kernel = (lambda w: w.T.reshape(hidden, heads, head_dim), to_hf_kernel)
  qkv_bias = (lambda b: b.reshape(heads, head_dim), lambda b: b.reshape(hidden))
  out_kernel = (lambda w: w.T.reshape(heads, head_dim, hidden), to_hf_kernel)
  table = {}
  for hf, name in (("query", "query"), ("key", "key"), ("value", "value")):
    table[p + f"attention.self.{hf}.weight"] = (ours + ("attention", name, "kernel"), qkv_kernel)
    table[p + f"attention.self.{hf}.bias"] = (ours + ("attention", name, "bias"), qkv_bias)
  table[p + "attention.output.dense.weight"] = (ours + ("attention", "output", "kernel"),
                                                out_kernel)
  table[p + "attention.output.dense.bias"] = (ours + ("attention", "output", "bias"), None)
  for hf, name in (("attention.output.LayerNorm", "post_att_layer_norm"),
                   ("output.LayerNorm", "post_ffn_layer_norm")):
    table[p + f"{hf}.weight"] = (ours + (name, "scale"), None)
    table[p + f"{hf}.bias"] = (ours + (name, "bias"), None)
  for hf, name in (("intermediate.dense", "ffn_fc_0"), ("output.dense", "ffn_fc_1")):
    table[p + f"{hf}.weight"] = (ours + (name, "kernel"), _TRANSPOSED)
    table[p + f"{hf}.bias"] = (ours + (name, "bias"), None)
  return table


def name_map(config) -> dict:
  """HF RoBERTa name -> (our parameter path, layout (to ours, to HF) or None)."""
  head_dim = config.hidden_size // config.num_heads
  table = {
      "roberta.embeddings.word_embeddings.weight": (("text_embeddings", "word_embedding"), None),
      "roberta.embeddings.LayerNorm.weight": (("text_embeddings", "layer_norm", "scale"), None),
      "roberta.embeddings.LayerNorm.bias": (("text_embeddings", "layer_norm", "bias"), None),
      "lm_head.dense.weight": (("lm_head", "mask_lm_trans_fc", "kernel"), _TRANSPOSED),
      "lm_head.dense.bias": (("lm_head", "mask_lm_trans_fc", "bias"), None),
      "lm_head.layer_norm.weight": (("lm_head", "mask_lm_trans_layer_norm", "scale"), None),
      "lm_head.layer_norm.bias": (("lm_head", "mask_lm_trans_layer_norm", "bias"), None),
      "lm_head.bias": (("lm_head", "mask_lm_out_bias"), None),
  }
  for i in range(config.num_layers):
    table.update(_layer_map(i, config.num_heads, head_dim))
  return table


# Present in HF checkpoints but deliberately not used: tied copies, buffers, the tanh pooler
# (UNIMO's pooled_fc_text uses ReLU and is trained fresh), token types (folded into positions).
_IGNORED = re.compile(r"(lm_head\.decoder\.(weight|bias)|.*position_ids|roberta\.pooler\..*"
                      r"|roberta\.embeddings\.token_type_embeddings\.weight"
                      r"|roberta\.embeddings\.position_embeddings\.weight)$")


def _set(tree, path, value):
  for key in path[:-1]:
    tree = tree[key]
  old = tree[path[-1]]
  if tuple(old.shape) != tuple(value.shape):
    raise ValueError(f"params/{'/'.join(path)}: expected shape {tuple(old.shape)} from the model "
                     f"config, found {tuple(value.shape)} in the checkpoint")
  tree[path[-1]] = np.asarray(value, dtype=old.dtype)


def params_from_roberta(state_dict, config, rng=None):
  """(params, report): our parameters with every RoBERTa weight copied in.

  report = {'converted': [hf names], 'unused': [hf names not mapped], 'missing': [hf names the
  config expects but the checkpoint lacks], 'fresh': [our params left at their initialisation]}.
  A missing weight raises ValueError: a partial encoder is never returned silently.
  """
  state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}
  if not any(k.startswith("roberta.") for k in state):  # a bare RobertaModel state dict
    state = {("roberta." + k if not k.startswith("lm_head.") else k): v for k, v in state.items()}
  rng = jax.random.key(0) if rng is None else rng
  scanned = config.scan_layers
  unrolled = config.copy_and_resolve_references()
  unrolled.scan_layers = False
  params = jax.tree.map(np.asarray, init_params(unrolled, rng))
  table = name_map(config)
  missing = [name for name in table if name not in state]
  if "roberta.embeddings.position_embeddings.weight" not in state:
    missing.append("roberta.embeddings.position_embeddings.weight")
  if missing:
    raise ValueError(f"RoBERTa checkpoint: missing {len(missing)} expected weights, e.g. "
                     f"{missing[:5]}; found {len(state)} names, e.g. {sorted(state)[:5]}")
  for name, (path, layout) in table.items():
    value = _numpy(state[name]).astype(np.float32)
    _set(params, path, layout[0](value) if layout else value)
  positions = _numpy(state["roberta.embeddings.position_embeddings.weight"]).astype(np.float32)
  token_type = state.get("roberta.embeddings.token_type_embeddings.weight")
  if token_type is not None:
    positions = positions + _numpy(token_type).astype(np.float32)[0]
  _set(params, ("text_embeddings", "pos_embedding"), positions)
  converted = sorted(table) + ["roberta.embeddings.position_embeddings.weight"]
  unused = sorted(k for k in state if k not in table and not _IGNORED.match(k))
  filled = {path[0] for path, _ in table.values()}
  fresh = sorted(k for k in params if k not in filled)
  if scanned:
    params = stack_layers(params, config.num_layers)
  params = jax.tree.map(np.asarray, params)
  return params, {"converted": converted, "unused": unused, "missing": [], "fresh": fresh}
