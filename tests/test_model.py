"""The model: parameter counts, layouts, decoding cache, image inputs, dropout."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unimo_jax.data.synthetic.random_batch import random_regions, random_text
from unimo_jax.model import (Unimo, abstract_params, count_params, init_params, model_config,
                             stack_layers, unstack_layers)
from unimo_jax.model.params import ENCODER_GROUPS
from unimo_jax.parallel import DEFAULT_LOGICAL_AXIS_RULES


def _pair(config, seed=0, batch=2, length=10, regions=5, **kw):
  rng = np.random.default_rng(seed)
  out = dict(random_regions(config, rng, batch, regions, kw.get("counts")))
  out["input_ids"] = random_text(config, rng, batch, length, kw.get("lengths"))
  return out


def test_base_encoder_parameter_count_is_roberta_base_plus_image_projections():
  params = abstract_params(model_config("base"))
  # RoBERTa-base embeddings (50265 + 514 rows of 768, LayerNorm) = 38,999,808
  # + image projections (2048x768 + 5x768 + biases + LayerNorm) = 1,579,776
  # + 12 post-LN layers of 7,087,872 = 85,054,464.
  assert count_params(params, ENCODER_GROUPS) == 125_634_048
  assert count_params(params["text_embeddings"]) == 38_999_808
  assert count_params(params["region_embeddings"]) == 1_579_776
  large = abstract_params(model_config("large"))
  assert count_params(large, ENCODER_GROUPS) == 356_415_488


def test_every_parameter_has_logical_names_known_to_the_rules():
  boxed = abstract_params(model_config("tiny"))
  known = {name for name, _ in DEFAULT_LOGICAL_AXIS_RULES}
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  for leaf in leaves:
    assert isinstance(leaf, nn.Partitioned), leaf
    assert len(leaf.names) == leaf.value.ndim
    assert set(n for n in leaf.names if n is not None) <= known, leaf.names


@pytest.mark.parametrize("remat", ["none", "full", "dots", "attention"])
def test_scanned_layers_equal_unrolled_layers(remat):
  config = model_config("tiny")
  params = init_params(config, jax.random.key(1))
  batch = _pair(config)
  ref = Unimo(config).apply({"params": params}, batch)
  scanned = config.copy_and_resolve_references()
  scanned.scan_layers, scanned.remat = True, remat
  stacked = stack_layers(params, config.num_layers)
  assert jax.tree.structure(stacked) == jax.tree.structure(init_params(scanned, jax.random.key(1)))
  out = Unimo(scanned).apply({"params": stacked}, batch)
  np.testing.assert_allclose(out["hidden"], ref["hidden"], atol=1e-5)
  np.testing.assert_allclose(out["lm_logits"], ref["lm_logits"], atol=1e-5)
  back = unstack_layers(stacked, config.num_layers)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  # Gradients too (remat changes only what is stored).
  loss = lambda p, c: jnp.sum(Unimo(c).apply({"params": p}, batch)["hidden"] ** 2)
  g_ref = jax.grad(loss)(params, config)
  g = unstack_layers(jax.grad(loss)(stacked, scanned), config.num_layers)
  # Float32 sums in another order: compare relative to the overall gradient scale (some leaves,
  # like the key bias, have an exactly-zero true gradient and carry only rounding noise).
  scale = max(float(np.abs(np.asarray(b)).max()) for b in jax.tree.leaves(g_ref))
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
    assert np.abs(np.asarray(a - b)).max() <= 1e-5 * scale


@pytest.mark.parametrize("scan_layers", [False, True])
def test_cached_decoding_matches_full_caption_pass(scan_layers):
  """prefill(image + tags) then one token at a time == the full caption-mask forward pass."""
  config = model_config("tiny")
  config.scan_layers = scan_layers
  params = init_params(config, jax.random.key(2))
  model = Unimo(config)
  rng = np.random.default_rng(3)
  tags, caption = 3, 6
  batch = dict(random_regions(config, rng, batch=2, regions=4, counts=[4, 2]))
  ids = random_text(config, rng, batch=2, length=tags + caption)
  positions = np.concatenate([np.arange(2, 2 + tags), np.arange(2, 2 + caption)])[None].repeat(2, 0)
  target = np.zeros(ids.shape, bool)
  target[:, tags:] = True
  full = model.apply({"params": params}, dict(batch, input_ids=ids, position_ids=positions,
                                              target_mask=target), mask_kind="caption")
  source = dict(batch, input_ids=ids[:, :tags], position_ids=positions[:, :tags])
  cache_length = 5 + tags + caption
  _, state = model.apply({"params": params}, source, cache_mode="prefill",
                         cache_length=cache_length, mutable=["cache"])
  step = jax.jit(lambda cache, tok, pos: model.apply(
      {"params": params, **cache}, {"input_ids": tok, "position_ids": pos}, cache_mode="step",
      mutable=["cache"]))
  for t in range(caption):
    out, state = step(state, ids[:, tags + t:tags + t + 1], positions[:, tags + t:tags + t + 1])
    np.testing.assert_allclose(out["lm_logits"][:, 0], full["lm_logits"][:, tags + t], atol=2e-5)
  assert int(state["cache"]["index"]) == cache_length


def test_step_without_cache_is_a_clear_error():
  config = model_config("tiny")
  params = init_params(config, jax.random.key(0))
  with pytest.raises(ValueError, match="prefill"):
    Unimo(config).apply({"params": params}, {"input_ids": np.ones((1, 1), np.int32) * 5,
                                             "position_ids": np.full((1, 1), 2, np.int32)},
                        cache_mode="step", mutable=["cache"])


def test_image_without_boxes_masks_its_block():
  config = model_config("tiny")
  params = init_params(config, jax.random.key(3))
  model = Unimo(config)
  pair = _pair(config, counts=[0, 3])
  out = model.apply({"params": params}, pair)
  np.testing.assert_array_equal(np.asarray(out["valid"])[0, :6], False)  # [IMG] + 5 regions
  np.testing.assert_array_equal(np.asarray(out["valid"])[1, :6], [1, 1, 1, 1, 0, 0])
  text_only = model.apply({"params": params}, {"input_ids": pair["input_ids"]})
  # The first example's text never sees its (box-less) image: same as encoding the text alone.
  np.testing.assert_allclose(out["hidden"][0, 6:], text_only["hidden"][0], atol=1e-5)
  assert np.abs(np.asarray(out["hidden"][1, 6:] - text_only["hidden"][1])).max() > 1e-3


def test_global_image_slot_is_mean_of_real_regions():
  config = model_config("tiny")
  params = init_params(config, jax.random.key(4))
  pair = _pair(config, counts=[2, 5])
  manual = {k: np.array(v) for k, v in pair.items()}
  # The [IMG] slot's embedding equals that of a lone region holding the mean of the two real
  # regions' features at the whole-image location; the three padded regions do not count.
  from unimo_jax.model.embeddings import RegionEmbedding
  emb = RegionEmbedding(config)
  p = {"params": params["region_embeddings"]}
  x, _ = emb.apply(p, manual["region_features"], manual["region_locations"],
                   manual["region_mask"], True)
  mean0 = manual["region_features"][0, :2].mean(0)
  one = emb.apply(p, mean0[None, None], np.array([[[0, 0, 1, 1, 1]]], np.float32),
                  np.ones((1, 1), bool), True)[0]
  np.testing.assert_allclose(x[0, 0], one[0, 1], atol=1e-5)  # a lone region with the mean feature


def test_pixel_input_runs_end_to_end():
  config = model_config("tiny")
  config.image_input = "pixels"
  params = init_params(config, jax.random.key(5))
  rng = np.random.default_rng(0)
  batch = {"pixels": rng.uniform(size=(2, 64, 64, 3)).astype(np.float32),
           "input_ids": random_text(config, rng, 2, 7)}
  out = Unimo(config).apply({"params": params}, batch)
  assert out["image_length"] == 1 + (64 // 8) ** 2
  assert out["image_embedding"].shape == (2, config.contrastive_dim)
  assert "region_feature_pred" not in out and "pixel_embeddings" in params
  np.testing.assert_allclose(np.linalg.norm(out["image_embedding"], axis=-1), 1.0, atol=1e-5)


def test_dropout_is_active_only_when_not_deterministic():
  config = model_config("tiny")
  params = init_params(config, jax.random.key(6))
  batch = _pair(config)
  model = Unimo(config)
  a = model.apply({"params": params}, batch, deterministic=False, rngs={"dropout": jax.random.key(1)})
  b = model.apply({"params": params}, batch, deterministic=False, rngs={"dropout": jax.random.key(2)})
  c = model.apply({"params": params}, batch, deterministic=False, rngs={"dropout": jax.random.key(1)})
  assert np.abs(np.asarray(a["hidden"] - b["hidden"])).max() > 1e-2
  np.testing.assert_array_equal(a["hidden"], c["hidden"])


def test_softmax_as_backward_reads_its_returned_probabilities():
  """layers.softmax_as: the float32 softmax returned in a dtype, whose backward uses the returned
  p: dx = p * (dy - sum(dy * p)), written out here in float64. In float32 that is the softmax's
  own VJP (tolerance: float32 rounding); in bfloat16 it must use the rounded p (the exact
  softmax's VJP differs by about 2^-9 relative, far above the tolerance)."""
  from unimo_jax.model.layers import softmax_as
  x = 3 * jax.random.normal(jax.random.key(0), (2, 3, 5, 7))
  dy = jax.random.normal(jax.random.key(1), x.shape)
  for dtype in (jnp.float32, jnp.bfloat16):
    p, vjp = jax.vjp(lambda x: softmax_as(x, dtype), x)
    (dx,) = vjp(dy.astype(dtype))
    assert p.dtype == dtype and dx.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(p, np.float32), jax.nn.softmax(x, axis=-1),
                               rtol=2 ** -8 if dtype == jnp.bfloat16 else 1e-6, atol=1e-7)
    p64 = np.asarray(p.astype(jnp.float32), np.float64)
    dy64 = np.asarray(dy.astype(dtype).astype(jnp.float32), np.float64)
    expected = p64 * (dy64 - (dy64 * p64).sum(-1, keepdims=True))
    np.testing.assert_allclose(dx, expected, rtol=0, atol=1e-6 * np.abs(expected).max())
  exact = jax.vjp(lambda x: jax.nn.softmax(x, axis=-1), x)[1](dy.astype(jnp.bfloat16).astype(
      jnp.float32))[0]
  assert np.abs(np.asarray(exact) - expected).max() > 1e-4 * np.abs(expected).max()


def test_remat_with_dropout_gives_the_gradients_of_no_remat():
  """A rematerialised layer redraws its dropout masks in the backward pass: under every policy
  they must be the forward's, so the gradients equal those of the scanned layers that stored
  everything."""
  from unimo_jax.model.transformer import REMAT_POLICIES
  config = model_config("tiny")
  config.dropout_rate = config.attention_dropout_rate = 0.3
  config.scan_layers = True
  params = init_params(config, jax.random.key(8))
  batch = _pair(config)

  def grads(remat_name):
    c = config.copy_and_resolve_references()
    c.remat = remat_name
    loss = lambda p: jnp.sum(Unimo(c).apply({"params": p}, batch, deterministic=False, rngs={
        "dropout": jax.random.key(3)})["hidden"] ** 2)
    return jax.grad(loss)(params)

  ref = grads("none")
  scale = max(float(np.abs(np.asarray(b)).max()) for b in jax.tree.leaves(ref))
  for remat in REMAT_POLICIES:
    for a, b in zip(jax.tree.leaves(grads(remat)), jax.tree.leaves(ref)):
      assert np.abs(np.asarray(a - b)).max() <= 1e-5 * scale, remat


@pytest.mark.parametrize("scan", [False, True])
def test_an_unknown_remat_policy_is_named_with_the_choices(scan):
  config = model_config("tiny")
  config.remat, config.scan_layers = "dot", scan
  with pytest.raises(ValueError, match=r"model.remat: expected 'none' or one of \['attention', "
                     r"'dots', 'dots_attention', 'full'\], found 'dot'"):
    init_params(config, jax.random.key(0))


def test_remat_policies_keep_what_they_name():
  """Bytes one layer keeps for its backward pass (beyond its arguments) under each policy,
  against what each policy names: 'attention' keeps exactly the softmax output [batch, heads,
  q, k] in float32, 'dots' the Dense outputs, 'dots_attention' both, 'full' neither; and the
  layer's other checkpoint names mark q, k, v, the context and the FFN's hidden layer."""
  from jax._src.ad_checkpoint import saved_residuals  # jax 0.10's residual listing (pinned)
  from unimo_jax.model.transformer import REMAT_POLICIES, EncoderLayer, rematerialised

  config = model_config("tiny")
  config.dropout_rate = config.attention_dropout_rate = 0.1
  b, n, h, heads, mlp = 2, 9, config.hidden_size, config.num_heads, config.mlp_dim
  x, bias = jnp.ones((b, n, h)), jnp.zeros((b, 1, n, n))

  def kept(remat):
    layer = rematerialised(EncoderLayer, remat)(config, deterministic=False)
    params = layer.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, bias, 0)
    apply = lambda p, x: layer.apply(p, x, bias, 0, rngs={"dropout": jax.random.key(2)})
    return sum(int(np.prod(a.shape)) * a.dtype.itemsize for a, src in saved_residuals(
        apply, params, x) if "argument" not in src and "constant" not in src and a.shape)

  weights = 4 * b * heads * n * n  # the float32 softmax output
  dense_outputs = 4 * b * n * (4 * h + mlp + h)  # query, key, value, output; ffn_fc_0, ffn_fc_1
  assert kept("full") == 0
  assert kept("attention") == weights
  assert kept("dots") == dense_outputs
  assert kept("dots_attention") == weights + dense_outputs
  assert kept("none") > weights + dense_outputs
  # the named tensors a what-if policy can keep (save_only_these_names)
  names = jax.checkpoint_policies.save_only_these_names
  REMAT_POLICIES["qkvc"] = names("query", "key", "value", "context")
  REMAT_POLICIES["ffn"] = names("ffn_hidden")
  try:
    assert kept("qkvc") == 4 * b * n * 4 * h  # [batch, length, heads, kv] each
    assert kept("ffn") == 4 * b * n * mlp  # ffn_fc_0's output, before the GELU
  finally:
    REMAT_POLICIES.pop("qkvc"), REMAT_POLICIES.pop("ffn")


def test_bfloat16_compute_stays_close_to_float32():
  config = model_config("tiny")
  params = init_params(config, jax.random.key(7))
  batch = _pair(config)
  ref = Unimo(config).apply({"params": params}, batch)["lm_logits"]
  config.dtype = "bfloat16"
  out = Unimo(config).apply({"params": params}, batch)["lm_logits"]
  assert out.dtype == jnp.float32  # logits are returned in float32 for the losses
  assert np.abs(np.asarray(out - ref)).max() < 0.1 * np.abs(np.asarray(ref)).max()


def test_lm_positions_gather_the_requested_text_positions():
  config = model_config("tiny")
  params = init_params(config, jax.random.key(8))
  batch = _pair(config)
  model = Unimo(config)
  full = model.apply({"params": params}, batch)["lm_logits"]
  positions = np.array([[1, 4], [0, 9]], np.int32)
  some = model.apply({"params": params}, dict(batch, lm_positions=positions))["lm_logits"]
  np.testing.assert_allclose(some, np.take_along_axis(np.asarray(full), positions[..., None], 1),
                             atol=1e-5)


@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_pooled_vectors_read_the_configured_positions(pooling):
  config = model_config("tiny")
  config.pooling = pooling
  params = init_params(config, jax.random.key(3))
  batch = _pair(config, counts=[2, 4], lengths=[6, 9])
  out = Unimo(config).apply({"params": params}, batch)
  h, valid, n = np.asarray(out["hidden"]), np.asarray(out["valid"]), out["image_length"]

  def expected(block, mask, name):
    if pooling == "first":
      x = block[:, 0]
    else:  # written out: the sum over valid positions divided by their count
      x = np.stack([block[b][mask[b]].sum(0) / mask[b].sum() for b in range(len(block))])
    p = params[name]["dense"]
    return np.maximum(x @ np.asarray(p["kernel"]) + np.asarray(p["bias"]), 0.0)

  np.testing.assert_allclose(out["pooled_image"], expected(h[:, :n], valid[:, :n],
                                                           "pooled_fc_image"), atol=1e-5)
  np.testing.assert_allclose(out["pooled_text"], expected(h[:, n:], valid[:, n:],
                                                          "pooled_fc_text"), atol=1e-5)
  # 'mean' reads padding nowhere: changing a padded region's features leaves both vectors alone
  changed = dict(batch, region_features=np.asarray(batch["region_features"]).copy())
  changed["region_features"][0, 3] += 5.0  # image 0 has 2 real regions
  again = Unimo(config).apply({"params": params}, changed)
  np.testing.assert_allclose(again["pooled_image"], out["pooled_image"], atol=1e-6)


def test_unknown_pooling_is_a_clear_error():
  config = model_config("tiny")
  config.pooling = "max"
  with pytest.raises(ValueError, match=r"model.pooling: expected one of \('first', 'mean'\), "
                                       r"found 'max'"):
    Unimo(config).init(jax.random.key(0), _pair(config))
