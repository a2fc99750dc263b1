"""Building blocks with logical axis names on every parameter.

Logical names used across the model (mapped to mesh axes by one rules table, see parallel.py):
  batch, length, embed, heads, kv, mlp, vocab       sharded or shardable dimensions
  position_table, region_feature, location,          small or odd dimensions, kept replicated
  region_classes, patch, contrastive, layers
"""

from functools import partial
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

# Additive attention bias for blocked pairs. exp(-1e9 - max) underflows to exactly 0 in float32 and
# bfloat16, so a blocked position has no influence at all (UNIMO used -1e4 with the same effect).
MASK_BIAS = -1e9


def compute_dtype(config) -> jnp.dtype:
  """The activation dtype named by `config.dtype` ('float32' or 'bfloat16')."""
  if config.dtype not in ("float32", "bfloat16"):
    raise ValueError(f"model.dtype: expected 'float32' or 'bfloat16', found {config.dtype!r}")
  return jnp.dtype(config.dtype)


def kernel_init(config, names: Sequence[str]):
  """Truncated-normal initialiser (std = initializer_range) tagged with logical axis names."""
  return nn.with_logical_partitioning(
      nn.initializers.truncated_normal(config.initializer_range), tuple(names))


def zeros_init(names: Sequence[str]):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), tuple(names))


class Dense(nn.Module):
  """y = x . kernel + bias, contracting the last `contract` input dims; kernel [*in, *features].

  Kernel and bias are created at their full rank so their logical names always apply (flax's
  DenseGeneral creates a flattened kernel first, which a rank-3 sharding rule cannot annotate).
  """
  config: object
  features: tuple
  names: tuple
  contract: int = 1

  @nn.compact
  def __call__(self, x):
    dtype = compute_dtype(self.config)
    in_shape = x.shape[x.ndim - self.contract:]
    kernel = self.param("kernel", kernel_init(self.config, self.names), in_shape + self.features)
    bias = self.param("bias", zeros_init(self.names[len(in_shape):]), self.features)
    dims = ((tuple(range(x.ndim - self.contract, x.ndim)), tuple(range(self.contract))), ((), ()))
    y = jax.lax.dot_general(x.astype(dtype), kernel.astype(dtype), dims)
    return y + bias.astype(dtype)


def dense(config, features, names: Sequence[str], name: str, contract: int = 1) -> nn.Module:
  """A Dense layer whose kernel and bias carry logical axis names.

  `names` names every kernel dimension, input dimensions first; the bias takes the output names.
  """
  features = tuple(features) if isinstance(features, (tuple, list)) else (features,)
  if len(names) != contract + len(features):
    raise ValueError(f"dense {name}: expected {contract + len(features)} axis names, found {names}")
  return Dense(config, features, tuple(names), contract, name=name)


def layer_norm(config, name: str) -> nn.Module:
  """LayerNorm over `embed` with RoBERTa's epsilon; statistics in float32."""
  return nn.LayerNorm(
      epsilon=config.layer_norm_eps,
      dtype=compute_dtype(config),
      param_dtype=jnp.float32,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
      bias_init=zeros_init(("embed",)),
      name=name,
  )


def gelu(x):
  """Exact (erf) GELU, as RoBERTa and Paddle 1.8's default."""
  return nn.gelu(x, approximate=False)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def softmax_as(x, dtype):
  """softmax(x) over the last axis in float32, returned in `dtype`; its backward pass reads that
  returned tensor p instead of a float32 copy of the softmax: dx = p * (dy - sum(dy * p)), in
  float32. So a remat policy that keeps p ('attention_weights') spares the backward pass the
  scores and the softmax, and no float32 [batch, heads, q, k] residual is kept. With float32
  `dtype` this is jax.nn.softmax's VJP; with bfloat16 it differs from it by p's rounding.
  A custom VJP: reverse-mode differentiation only (nothing here uses forward mode)."""
  return jax.nn.softmax(x.astype(jnp.float32), axis=-1).astype(dtype)


def _softmax_as_forward(x, dtype):
  # named 'attention_weights' (output and residual, one tensor): the remat policies that keep it
  p = checkpoint_name(softmax_as(x, dtype), "attention_weights")
  return p, (p, jnp.zeros((), x.dtype))


def _softmax_as_backward(dtype, residuals, dp):
  p, x_zero = residuals
  p32, dp32 = p.astype(jnp.float32), dp.astype(jnp.float32)
  return ((p32 * (dp32 - jnp.sum(dp32 * p32, axis=-1, keepdims=True))).astype(x_zero.dtype),)


softmax_as.defvjp(_softmax_as_forward, _softmax_as_backward)


def constrain(x, names: Sequence[str]):
  """Annotates an activation with logical axis names (a no-op outside a mesh + rules context)."""
  return nn.with_logical_constraint(x, tuple(names))
