"""Attention masks of UNIMO as additive biases.

One rule covers all three kinds. Every position is either source or target:
  * source rows see every valid source position (bidirectional inside the source);
  * target rows see every valid source position plus valid target positions up to themselves.
Kinds differ only in what the target is:
  bidirectional  no target: every valid position sees every valid position;
  seq2seq        the target is the marked text span (source text -> target text);
  caption        the target is the caption; the image block and any object tags form the source,
                 so they are bidirectional among themselves and blind to the caption.
Padding positions are keys no one sees. A padding row itself sees the valid keys (its output is
never used); a row with no valid key at all (an image without boxes) attends uniformly and is
likewise never read.
"""

import jax.numpy as jnp

from unimo_jax.model.layers import MASK_BIAS

MASK_KINDS = ("bidirectional", "seq2seq", "caption")


def allowed_attention(kind: str, valid, is_target=None):
  """Boolean [batch, query, key] matrix of which key each query may attend to.

  valid:     [batch, length] bool, real (non-padding) positions.
  is_target: [batch, length] bool, target positions (ignored for 'bidirectional').
  """
  if kind not in MASK_KINDS:
    raise ValueError(f"mask_kind: expected one of {MASK_KINDS}, found {kind!r}")
  allowed = jnp.broadcast_to(valid[:, None, :], valid.shape[:1] + valid.shape[1:] * 2)
  if kind == "bidirectional":
    return allowed
  if is_target is None:
    raise ValueError(f"mask_kind {kind!r} needs a target mask ('target_mask' in the batch)")
  length = valid.shape[1]
  causal = jnp.tril(jnp.ones((length, length), dtype=bool))  # [query, key]: key <= query
  source_key = ~is_target[:, None, :]
  target_pair = is_target[:, :, None] & is_target[:, None, :] & causal[None]
  return allowed & (source_key | target_pair)


def attention_bias(allowed, dtype=jnp.float32):
  """[batch, 1, query, key] additive bias: 0 where allowed, MASK_BIAS where blocked."""
  return jnp.where(allowed, 0.0, MASK_BIAS).astype(dtype)[:, None]
