"""Model presets: tiny (CPU tests), base and large (UNIMO / RoBERTa sizes).

Every field of the model config is defined here; `model_config(name)` returns a fresh, unlocked
`ml_collections.ConfigDict` that configs and tests may adjust before building `Unimo(config)`.
"""

import ml_collections

# Architecture per preset. FFN size is 4 x hidden as in UNIMO (`d_inner_hid = emb_size * 4`).
_SIZES = {
    # name: (layers, hidden, heads, vocab, positions, region_dim, region_classes)
    "tiny": (2, 64, 4, 512, 130, 32, 64),  # region dims match the synthetic scenes
    "base": (12, 768, 12, 50265, 514, 2048, 1601),
    "large": (24, 1024, 16, 50265, 514, 2048, 1601),
}

PRESETS = tuple(_SIZES)


def model_config(name: str = "tiny") -> ml_collections.ConfigDict:
  """Returns the model config of preset `name` ('tiny', 'base' or 'large')."""
  if name not in _SIZES:
    raise ValueError(f"unknown model preset {name!r}: expected one of {PRESETS}")
  layers, hidden, heads, vocab, positions, region_dim, classes = _SIZES[name]
  c = ml_collections.ConfigDict()
  c.name = name
  # Transformer (post-LN, RoBERTa layout).
  c.num_layers = layers
  c.hidden_size = hidden
  c.num_heads = heads
  c.mlp_dim = 4 * hidden
  c.vocab_size = vocab
  c.max_position_embeddings = positions
  c.pad_token_id = 1  # RoBERTa/UNIMO [PAD]; positions of real tokens start at pad_token_id + 1 = 2.
  c.layer_norm_eps = 1e-5
  c.dropout_rate = 0.1
  c.attention_dropout_rate = 0.1
  c.initializer_range = 0.02
  # Dialog embeddings (UNIMO's task_type='dialog', CoQA): rows of the role and turn tables added
  # to word + position; 0 = no such table (every other task).
  c.role_type_size = 0
  c.turn_type_size = 0
  # The LM output shares the word embedding (UNIMO's weight_sharing=True); False: its own kernel.
  c.tie_lm_head = True
  # Image input: 'regions' (detector features, UNIMO's default) or 'pixels' (ViT patches).
  c.image_input = "regions"
  c.region_feature_dim = region_dim
  c.num_region_classes = classes
  c.image_size = 64 if name == "tiny" else 224
  c.patch_size = 8 if name == "tiny" else 16
  c.image_channels = 3
  # What the pooled_fc layers read: 'first' (the [IMG] / [CLS] slot, UNIMO's) or 'mean' (the
  # mean of the block's valid positions; docs/notes/embedded_default.md).
  c.pooling = "first"
  # Contrastive (CMCL) projection on top of the pooled vectors; 0 = use pooled as is.
  c.contrastive_dim = hidden
  c.temperature_init = 0.07
  c.temperature_min = 0.001
  c.temperature_max = 0.5
  # Compute and memory.
  c.dtype = "float32"  # compute dtype; parameters are always float32
  c.scan_layers = False
  # what a layer keeps for its backward pass: 'none' (everything, no recompute), 'full' (its
  # input), 'dots' (the Dense outputs), 'attention' (the softmax output), 'dots_attention' (both)
  c.remat = "none"
  return c
