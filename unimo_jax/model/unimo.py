"""The UNIMO model: one post-LN transformer over [IMG] v1..vN ⊕ [CLS] w1..wn [SEP].

Called purely: `Unimo(config).apply(params, batch, mask_kind=..., deterministic=..., rngs=...)`.
See inputs.py for the batch fields and the dict returned by `Unimo.__call__` for the outputs.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from unimo_jax.model.embeddings import (PixelEmbedding, RegionEmbedding, TextEmbedding,
                                        roberta_position_ids)
from unimo_jax.model.heads import (ContrastiveProjection, LMHead, Pooler, RegionHeads, Temperature,
                                   pooled_position)
from unimo_jax.model.input_checks import has_image, has_text, validate_batch
from unimo_jax.model.masks import allowed_attention, attention_bias
from unimo_jax.model.transformer import Encoder

ALL_HEADS = frozenset({"lm", "region", "contrastive"})


class Unimo(nn.Module):
  config: object

  @nn.compact
  def __call__(self, batch, *, mask_kind: str = "bidirectional", deterministic: bool = True,
               heads=ALL_HEADS, cache_mode=None, cache_length: int = 0):
    """Encodes text, an image, or both, and applies the requested heads.

    Args:
      batch: dict of arrays (see inputs.py).
      mask_kind: 'bidirectional', 'seq2seq' or 'caption' (see masks.py).
      deterministic: disables dropout when True; otherwise needs a 'dropout' rng.
      heads: subset of {'lm', 'region', 'contrastive'} to compute.
      cache_mode: None, 'prefill' (encode the source into a decoding cache of `cache_length`
        slots, apply with mutable=['cache']) or 'step' (one token per example, input_ids and
        position_ids of shape [batch, 1], against that cache).

    Returns a dict with, where the inputs allow:
      hidden [batch, seq, hidden], valid [batch, seq], image_length (int),
      pooled_image / pooled_text [batch, hidden], image_embedding / text_embedding [batch, dim]
      (L2-normalised), temperature (scalar), lm_logits [batch, positions, vocab],
      region_feature_pred [batch, regions, feature_dim], region_class_logits [batch, regions, classes].
    """
    c = self.config
    validate_batch(batch, c, mask_kind, cache_mode)
    unknown = set(heads) - ALL_HEADS
    if unknown:
      raise ValueError(f"heads: expected a subset of {sorted(ALL_HEADS)}, found {sorted(unknown)}")
    text_embed = TextEmbedding(c, name="text_embeddings")
    encoder = Encoder(c, deterministic, cache_mode, cache_length, name="encoder")

    # ---- embeddings: image block first, then text --------------------------------------------
    blocks, valids, targets = [], [], []
    image_length = 0
    if has_image(batch):
      if c.image_input == "regions":
        x_img, valid_img = RegionEmbedding(c, name="region_embeddings")(
            batch["region_features"], batch["region_locations"], batch["region_mask"],
            deterministic, batch.get("region_delta"))
      else:
        x_img, valid_img = PixelEmbedding(c, name="pixel_embeddings")(batch["pixels"], deterministic)
      image_length = x_img.shape[1]
      blocks.append(x_img)
      valids.append(valid_img)
      targets.append(jnp.zeros_like(valid_img))
    if has_text(batch):
      ids = batch["input_ids"]
      positions = batch.get("position_ids")
      if positions is None:
        positions = roberta_position_ids(ids, c.pad_token_id)
      blocks.append(text_embed(ids, positions, deterministic, batch.get("role_ids"),
                               batch.get("turn_ids"), batch.get("text_delta")))
      valids.append(ids != c.pad_token_id)
      targets.append(jnp.asarray(batch.get("target_mask", jnp.zeros_like(ids)), bool))
    x = jnp.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]  # [batch, seq, hidden]
    valid = jnp.concatenate(valids, axis=1) if len(valids) > 1 else valids[0]  # [batch, seq]

    # ---- attention bias and encoder ---------------------------------------------------------
    cache_index = None
    if cache_mode == "step":
      bias, cache_index = self._step_bias(valid)
    else:
      is_target = jnp.concatenate(targets, axis=1) if len(targets) > 1 else targets[0]
      kind = "bidirectional" if cache_mode == "prefill" else mask_kind
      bias = attention_bias(allowed_attention(kind, valid, is_target))
      if cache_mode == "prefill":
        self._start_cache(valid, cache_length)
    h = encoder(x, bias, cache_index)  # [batch, seq, hidden]

    # ---- heads ------------------------------------------------------------------------------
    out = {"hidden": h, "valid": valid, "image_length": image_length}
    if cache_mode == "step":
      out["lm_logits"] = LMHead(c, name="lm_head")(h, text_embed.attend)
      return out
    contrastive = "contrastive" in heads
    if image_length:
      out["pooled_image"] = Pooler(c, name="pooled_fc_image")(
          pooled_position(c, h[:, :image_length], valid[:, :image_length]))
      if contrastive:
        out["image_embedding"] = ContrastiveProjection(c, name="image_projection")(out["pooled_image"])
      if "region" in heads and c.image_input == "regions":
        out["region_feature_pred"], out["region_class_logits"] = RegionHeads(
            c, name="region_heads")(h[:, 1:image_length])
    if has_text(batch):
      text_h = h[:, image_length:]  # [batch, length, hidden]
      out["pooled_text"] = Pooler(c, name="pooled_fc_text")(
          pooled_position(c, text_h, valid[:, image_length:]))
      if contrastive:
        out["text_embedding"] = ContrastiveProjection(c, name="text_projection")(out["pooled_text"])
      if "lm" in heads:
        if "lm_positions" in batch:
          text_h = jnp.take_along_axis(text_h, batch["lm_positions"][..., None], axis=1)
        out["lm_logits"] = LMHead(c, name="lm_head")(text_h, text_embed.attend)
    if contrastive:
      out["temperature"] = Temperature(c, name="temperature")()
    return out

  def _start_cache(self, valid, cache_length):
    """Creates the shared cache state: which slots hold valid keys, and the next free slot."""
    batch, length = valid.shape
    if cache_length < length:
      raise ValueError(f"cache_length: expected >= the source length {length}, found {cache_length}")
    key_valid = self.variable("cache", "key_valid", jnp.zeros, (batch, cache_length), bool)
    index = self.variable("cache", "index", lambda: jnp.int32(0))
    key_valid.value = jax.lax.dynamic_update_slice(key_valid.value, valid, (0, 0))
    index.value = jnp.int32(length)

  def _step_bias(self, valid):
    """Marks the new token's slot valid and returns ([batch, 1, 1, slots] bias, its slot index)."""
    if not self.has_variable("cache", "index"):
      raise ValueError("cache_mode 'step' needs a cache: run cache_mode='prefill' first "
                       "and pass its 'cache' collection")
    key_valid = self.variable("cache", "key_valid", None)
    index = self.variable("cache", "index", None)
    slot = index.value
    key_valid.value = jax.lax.dynamic_update_slice(key_valid.value, valid, (0, slot))
    index.value = slot + valid.shape[1]
    return attention_bias(key_valid.value[:, None, :]), slot
