"""Post-LN transformer encoder exactly as RoBERTa/UNIMO, with an optional decoding cache.

Cache modes (decoding a seq2seq / caption target one token at a time):
  None       ordinary full-sequence pass;
  'prefill'  encode the source and store its keys/values in a cache of `cache_length` slots;
  'step'     one new token per example: write its key/value at `cache_index` and attend to the cache.
Source rows never see the target, so prefill + steps reproduce the full seq2seq pass exactly.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from unimo_jax.model.layers import compute_dtype, constrain, dense, gelu, layer_norm, softmax_as

CACHE_MODES = (None, "prefill", "step")


class _Block(nn.Module):
  """Settings every piece of the encoder shares; fixed per call of the model."""
  config: object
  deterministic: bool = True
  cache_mode: str | None = None
  cache_length: int = 0

  def settings(self) -> tuple:
    return (self.config, self.deterministic, self.cache_mode, self.cache_length)


class SelfAttention(_Block):

  @nn.compact
  def __call__(self, x, bias, cache_index):
    # x [batch, length, hidden]; bias [batch, 1, length, keys]; cache_index: int32 scalar
    c = self.config
    head_dim = c.hidden_size // c.num_heads
    qkv_names = ("embed", "heads", "kv")
    q = dense(c, (c.num_heads, head_dim), qkv_names, "query")(x)  # [batch, length, heads, kv]
    k = dense(c, (c.num_heads, head_dim), qkv_names, "key")(x)
    v = dense(c, (c.num_heads, head_dim), qkv_names, "value")(x)
    # q, k, v, the context and the FFN's hidden layer are named (checkpoint_name) so that a remat
    # policy can keep them (save_only_these_names; benchmarks/tpu_pass_probe.py's "keep" rows)
    q = checkpoint_name(constrain(q, ("batch", "length", "heads", "kv")), "query")
    k = checkpoint_name(constrain(k, ("batch", "length", "heads", "kv")), "key")
    v = checkpoint_name(constrain(v, ("batch", "length", "heads", "kv")), "value")
    if self.cache_mode is not None:
      k, v = self._use_cache(k, v, cache_index)
    q = q * jnp.asarray(head_dim ** -0.5, q.dtype)
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) + bias  # [batch, heads, q, k]
    # Softmax in float32, its output in the compute dtype before dropout (the matmul with v reads
    # it in that dtype either way): in bfloat16 the layer's largest tensor, and the dropout on
    # it, move half the bytes (docs/notes/base_step_time.md, "One chip, one pass").
    # named 'attention_weights' for the remat policies that keep it (recomputing it costs more
    # than the matmuls); the softmax's backward reads it, not a float32 copy
    probs = softmax_as(scores, v.dtype)
    probs = nn.Dropout(c.attention_dropout_rate)(probs, deterministic=self.deterministic)
    out = jnp.einsum("bhqk,bkhd->bqhd", probs, v)  # [batch, q, heads, kv]
    out = checkpoint_name(constrain(out, ("batch", "length", "heads", "kv")), "context")
    return dense(c, c.hidden_size, ("heads", "kv", "embed"), "output", contract=2)(out)

  def _use_cache(self, k, v, cache_index):
    """Stores k/v in the cache; in 'step' mode returns the whole cache as keys/values."""
    batch, length, heads, head_dim = k.shape
    shape = (batch, self.cache_length, heads, head_dim)
    cached_k = self.variable("cache", "cached_key", jnp.zeros, shape, k.dtype)
    cached_v = self.variable("cache", "cached_value", jnp.zeros, shape, v.dtype)
    if self.cache_mode == "prefill":
      cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k, (0, 0, 0, 0))
      cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v, (0, 0, 0, 0))
      return k, v
    cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k, (0, cache_index, 0, 0))
    cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v, (0, cache_index, 0, 0))
    return cached_k.value, cached_v.value


class EncoderLayer(_Block):
  """attention -> dropout -> +residual -> LN -> FFN(gelu) -> dropout -> +residual -> LN."""

  @nn.compact
  def __call__(self, x, bias, cache_index):
    c = self.config
    dropout = nn.Dropout(c.dropout_rate)
    attn = SelfAttention(*self.settings(), name="attention")(x, bias, cache_index)
    x = layer_norm(c, "post_att_layer_norm")(x + dropout(attn, deterministic=self.deterministic))
    x = constrain(x, ("batch", "length", "embed"))
    h = dense(c, c.mlp_dim, ("embed", "mlp"), "ffn_fc_0")(x)  # [batch, length, mlp]
    h = gelu(checkpoint_name(h, "ffn_hidden"))
    h = constrain(h, ("batch", "length", "mlp"))
    h = dense(c, c.hidden_size, ("mlp", "embed"), "ffn_fc_1")(h)
    x = layer_norm(c, "post_ffn_layer_norm")(x + dropout(h, deterministic=self.deterministic))
    return constrain(x, ("batch", "length", "embed")).astype(compute_dtype(c))


# What a rematerialised layer keeps for its backward pass (model.remat); the rest is recomputed.
# Each policy trades recomputation for stored activations; which is fastest depends on the step
# (benchmarks/tpu_pass_probe.py ranks them on one layer, docs/tpu_sizing.md per preset): base
# pretraining keeps 'attention', the other TPU presets 'full', or 'none' where the chip holds it
# all.
_SAVED_ATTENTION = jax.checkpoint_policies.save_only_these_names("attention_weights")
REMAT_POLICIES = {
    "full": None,  # the layer's input only
    "dots": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,  # the Dense outputs
    "attention": _SAVED_ATTENTION,  # the softmax output
    "dots_attention": jax.checkpoint_policies.save_from_both_policies(
        jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims, _SAVED_ATTENTION),
}


def rematerialised(block, remat: str, **kwargs):
  """`block` (a module class) wrapped by nn.remat with the policy named by model.remat, or
  unchanged for 'none'; kwargs go to nn.remat."""
  if remat == "none":
    return block
  if remat not in REMAT_POLICIES:
    raise ValueError(f"model.remat: expected 'none' or one of {sorted(REMAT_POLICIES)}, found "
                     f"{remat!r}")
  return nn.remat(block, policy=REMAT_POLICIES[remat], **kwargs)


class _ScannedLayer(_Block):
  """EncoderLayer with the (carry, output) signature nn.scan expects."""

  @nn.compact
  def __call__(self, x, bias, cache_index):
    layer = EncoderLayer(*self.settings(), name="layer")
    return layer(x, bias, cache_index), None


class Encoder(_Block):
  """num_layers post-LN layers; unrolled (`layer_{i}`) or scanned (`layers`, stacked on axis 0)."""

  @nn.compact
  def __call__(self, x, bias, cache_index=None):
    c = self.config
    if self.cache_mode not in CACHE_MODES:
      raise ValueError(f"cache_mode: expected one of {CACHE_MODES}, found {self.cache_mode!r}")
    cache_index = jnp.int32(0) if cache_index is None else cache_index
    args = self.settings()
    if c.scan_layers:
      stack = nn.scan(
          rematerialised(_ScannedLayer, c.remat, prevent_cse=False),
          variable_axes={"params": 0, "cache": 0},
          split_rngs={"params": True, "dropout": True},
          in_axes=(nn.broadcast, nn.broadcast),
          length=c.num_layers,
          metadata_params={nn.PARTITION_NAME: "layers"},
      )
      x, _ = stack(*args, name="layers")(x, bias, cache_index)
      return x
    block = rematerialised(EncoderLayer, c.remat)
    for i in range(c.num_layers):
      x = block(*args, name=f"layer_{i}")(x, bias, cache_index)
    return x
