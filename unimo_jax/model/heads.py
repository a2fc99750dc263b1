"""Output heads: tied LM, masked-region prediction, pooled [CLS]/[IMG] and contrastive projections."""

import flax.linen as nn
import jax.numpy as jnp

from unimo_jax.model.layers import (compute_dtype, constrain, dense, gelu, kernel_init,
                                    layer_norm, zeros_init)


class LMHead(nn.Module):
  """dense -> gelu -> LayerNorm -> logits = x . E^T + bias (E: the word embedding, tied); with
  model.tie_lm_head False, x . W + bias with its own W [hidden, vocab] (UNIMO's
  weight_sharing=False, `mask_lm_out_fc.w_0`)."""
  config: object

  @nn.compact
  def __call__(self, x, attend):
    # x [batch, positions, hidden] -> [batch, positions, vocab]
    c = self.config
    x = gelu(dense(c, c.hidden_size, ("embed", "mlp"), "mask_lm_trans_fc")(x))
    x = layer_norm(c, "mask_lm_trans_layer_norm")(x)
    bias = self.param("mask_lm_out_bias", zeros_init(("vocab",)), (c.vocab_size,))
    if c.get("tie_lm_head", True):
      logits = attend(x).astype(jnp.float32) + bias
    else:
      kernel = self.param("mask_lm_out_kernel", kernel_init(c, ("embed", "vocab")),
                          (c.hidden_size, c.vocab_size))
      dtype = compute_dtype(c)
      logits = jnp.einsum("...h,hv->...v", x.astype(dtype), kernel.astype(dtype))
      logits = logits.astype(jnp.float32) + bias
    return constrain(logits, ("batch", "length", "vocab"))


class RegionHeads(nn.Module):
  """Masked-region prediction: a shared transform, then feature regression and class logits."""
  config: object

  @nn.compact
  def __call__(self, x):
    # x [batch, regions, hidden] -> ([batch, regions, feature_dim], [batch, regions, classes])
    c = self.config
    x = gelu(dense(c, c.hidden_size, ("embed", "mlp"), "region_trans_fc")(x))
    x = layer_norm(c, "region_trans_layer_norm")(x)
    features = dense(c, c.region_feature_dim, ("embed", "region_feature"), "region_feature_head")(x)
    classes = dense(c, c.num_region_classes, ("embed", "region_classes"), "region_class_head")(x)
    return features.astype(jnp.float32), classes.astype(jnp.float32)


POOLINGS = ("first", "mean")


def pooled_position(config, h, valid):
  """The vector a block's Pooler reads: h [batch, length, hidden], valid [batch, length] ->
  [batch, hidden]. model.pooling 'first': the block's first slot ([IMG] / [CLS]), as UNIMO's
  get_pooled_output (src/model/unimo_finetune.py); 'mean': the mean over the block's valid
  positions (every region or token reaches the pooled vector directly, not only through
  attention from the first slot)."""
  if config.pooling == "first":
    return h[:, 0]
  if config.pooling == "mean":
    w = valid.astype(h.dtype)[..., None]  # [batch, length, 1]
    return (h * w).sum(axis=1) / jnp.maximum(w.sum(axis=1), 1.0)
  raise ValueError(f"model.pooling: expected one of {POOLINGS}, found {config.pooling!r}")


class Pooler(nn.Module):
  """Dense + ReLU on the pooled position (UNIMO's pooled_fc_text / pooled_fc_image)."""
  config: object

  @nn.compact
  def __call__(self, x):
    c = self.config
    return nn.relu(dense(c, c.hidden_size, ("embed", "mlp"), "dense")(x))


class ContrastiveProjection(nn.Module):
  """Optional linear projection, then L2 normalisation (the CMCL embedding)."""
  config: object

  @nn.compact
  def __call__(self, pooled):
    c = self.config
    x = pooled
    if c.contrastive_dim:
      x = dense(c, c.contrastive_dim, ("embed", "contrastive"), "dense")(x)
    x = x.astype(jnp.float32)
    return x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + 1e-12)


class Temperature(nn.Module):
  """Learnable CMCL temperature, initialised at temperature_init and clipped to [min, max]."""
  config: object

  @nn.compact
  def __call__(self):
    c = self.config
    init = nn.with_logical_partitioning(
        lambda key, shape: jnp.full(shape, c.temperature_init, jnp.float32), ())
    t = self.param("cmcl_temperature", init, ())
    return jnp.clip(t, c.temperature_min, c.temperature_max)
