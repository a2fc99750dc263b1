"""Input embeddings: text tokens, detector regions (with the global [IMG] slot), or pixel patches."""

import flax.linen as nn
import jax.numpy as jnp

from unimo_jax.model.layers import compute_dtype, constrain, dense, kernel_init, layer_norm

# Location of the global [IMG] slot: the whole image, [x1, y1, x2, y2, area] = [0, 0, 1, 1, 1].
GLOBAL_IMAGE_LOCATION = (0.0, 0.0, 1.0, 1.0, 1.0)


def roberta_position_ids(input_ids, pad_token_id: int):
  """RoBERTa positions: real tokens count from pad_token_id + 1 (= 2); padding gets pad_token_id."""
  is_real = (input_ids != pad_token_id).astype(jnp.int32)
  return jnp.cumsum(is_real, axis=1) * is_real + pad_token_id


class TextEmbedding(nn.Module):
  """word + position (+ role + turn in dialog models) -> LayerNorm -> dropout; no token-type
  embedding (UNIMO's encoder skips `sent_embedding`). Also the tied LM output.

  Dialog models (config.role_type_size / turn_type_size > 0) add `role_embedding[role_ids]` and
  `turn_embedding[turn_ids]` as src/model/unimo_finetune.py does for task_type 'dialog'; absent
  ids count as 0 (the target's role and turn)."""
  config: object

  def setup(self):
    c = self.config
    self.word_embedding = self.param(
        "word_embedding", kernel_init(c, ("vocab", "embed")), (c.vocab_size, c.hidden_size))
    self.pos_embedding = self.param(
        "pos_embedding", kernel_init(c, ("position_table", "embed")),
        (c.max_position_embeddings, c.hidden_size))
    self.tables = {name: self.param(name, kernel_init(c, ("position_table", "embed")),
                                    (size, c.hidden_size))
                   for name, size in (("role_embedding", c.role_type_size),
                                      ("turn_embedding", c.turn_type_size)) if size}
    self.layer_norm = layer_norm(c, "layer_norm")
    self.dropout = nn.Dropout(c.dropout_rate)

  def __call__(self, input_ids, position_ids, deterministic: bool, role_ids=None, turn_ids=None,
               delta=None):
    # input_ids, position_ids, role_ids, turn_ids: [batch, length] -> [batch, length, hidden]
    # delta [batch, length, hidden]: an adversarial perturbation of the summed embeddings, added
    # before the LayerNorm (UNIMO's text_adv_delta, VILLA)
    x = jnp.take(self.word_embedding, input_ids, axis=0) + jnp.take(
        self.pos_embedding, position_ids, axis=0)
    for name, ids in (("role_embedding", role_ids), ("turn_embedding", turn_ids)):
      if name in self.tables:
        x = x + jnp.take(self.tables[name], jnp.zeros_like(input_ids) if ids is None else ids,
                         axis=0)
    if delta is not None:
      x = x + delta.astype(x.dtype)
    x = self.layer_norm(x.astype(compute_dtype(self.config)))
    return constrain(self.dropout(x, deterministic=deterministic), ("batch", "length", "embed"))

  def attend(self, x):
    """Logits against the word embedding: [..., hidden] -> [..., vocab]."""
    dtype = compute_dtype(self.config)
    return jnp.einsum("...h,vh->...v", x.astype(dtype), self.word_embedding.astype(dtype))


class RegionEmbedding(nn.Module):
  """Dense(features) + Dense(location) -> LayerNorm -> dropout, with the global [IMG] slot first."""
  config: object

  @nn.compact
  def __call__(self, features, locations, region_mask, deterministic: bool, delta=None):
    # features [batch, regions, feature_dim]; locations [batch, regions, 5]; region_mask [batch, regions]
    # delta [batch, 1 + regions, feature_dim]: an adversarial perturbation of the input features,
    # the [IMG] slot's included (UNIMO's image_adv_delta, VILLA)
    c = self.config
    dtype = compute_dtype(c)
    features = features.astype(jnp.float32)
    mask = region_mask.astype(jnp.float32)
    count = mask.sum(axis=1, keepdims=True)  # [batch, 1]
    # [IMG] slot: mean of the image's real regions.
    global_feature = (features * mask[..., None]).sum(axis=1) / jnp.maximum(count, 1.0)
    features = jnp.concatenate([global_feature[:, None], features], axis=1)
    global_location = jnp.broadcast_to(
        jnp.asarray(GLOBAL_IMAGE_LOCATION, jnp.float32), (features.shape[0], 1, 5))
    locations = jnp.concatenate([global_location, locations.astype(jnp.float32)], axis=1)
    if delta is not None:
      features = features + delta.astype(jnp.float32)
    x = dense(c, c.hidden_size, ("region_feature", "embed"), "image_emb")(features.astype(dtype))
    x = x + dense(c, c.hidden_size, ("location", "embed"), "image_loc")(locations.astype(dtype))
    x = layer_norm(c, "layer_norm")(x)
    x = nn.Dropout(c.dropout_rate)(x, deterministic=deterministic)
    # An image with no boxes masks its whole block, the [IMG] slot included (as UNIMO's reader).
    has_boxes = count > 0  # [batch, 1]
    valid = jnp.concatenate([has_boxes, region_mask.astype(bool) & has_boxes], axis=1)
    return constrain(x, ("batch", "length", "embed")), valid  # [batch, 1 + regions, hidden], [batch, 1 + regions]


class PixelEmbedding(nn.Module):
  """ViT-style patches + learned positions, with a learned [IMG] slot first."""
  config: object

  @nn.compact
  def __call__(self, pixels, deterministic: bool):
    # pixels [batch, height, width, channels] -> [batch, 1 + patches, hidden]
    c = self.config
    p = c.patch_size
    b, h, w, ch = pixels.shape
    patches = pixels.reshape(b, h // p, p, w // p, p, ch).transpose(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(b, (h // p) * (w // p), p * p * ch).astype(compute_dtype(c))
    x = dense(c, c.hidden_size, ("patch", "embed"), "patch_emb")(patches)
    img_token = self.param("img_token", kernel_init(c, (None, None, "embed")), (1, 1, c.hidden_size))
    x = jnp.concatenate([jnp.broadcast_to(img_token, (b, 1, c.hidden_size)).astype(x.dtype), x], axis=1)
    positions = self.param(
        "pos_embedding", kernel_init(c, ("position_table", "embed")), (x.shape[1], c.hidden_size))
    x = layer_norm(c, "layer_norm")(x + positions.astype(x.dtype))
    x = nn.Dropout(c.dropout_rate)(x, deterministic=deterministic)
    valid = jnp.ones(x.shape[:2], dtype=bool)
    return constrain(x, ("batch", "length", "embed")), valid
