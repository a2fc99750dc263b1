"""Text generation with the UNIMO model: encode the source once into the key/value cache, then
decode the target with decoding/search.py (beam search, greedy or sampling).

The source is anything the model encodes bidirectionally: an image (captioning), an image plus
object tags, or text (seq2seq tasks). The target block starts with BOS ([CLS]) at position 2 and
counts up from there, as UNIMO's seq2seq and caption readers lay it out.
"""

import jax
import jax.numpy as jnp

from unimo_jax.decoding.search import DecodeSettings, decode

TARGET_START_POSITION = 2  # RoBERTa positions: the target's [CLS] takes 2, its tokens 3, 4, ...


def unimo_cache_axes(cache):
  """The batch axis of every cache leaf: 1 under the scanned 'layers' stack, else 0; -1 for the
  shared write index."""
  def axis(path, leaf):
    if leaf.ndim == 0:
      return -1
    names = [str(getattr(p, "key", p)) for p in path]
    return 1 if "layers" in names else 0
  return jax.tree_util.tree_map_with_path(axis, cache)


def source_length(model, params, source) -> int:
  """Positions the model encodes for `source` (image slots plus text), from shapes only."""
  out = jax.eval_shape(lambda p, s: model.apply({"params": p}, s, heads=()), params, source)
  return out["hidden"].shape[1]


def generate(model, params, source: dict, settings: DecodeSettings, *, bos_id: int, eos_id: int,
             pad_id: int, rng=None, valid_vocab: int | None = None, word_starts=None) -> dict:
  """Decodes a target for every source example; see decode.decode for the returned arrays."""
  leaves = jax.tree.leaves(source)
  batch_size = leaves[0].shape[0]
  cache_length = source_length(model, params, source) + settings.max_length
  _, state = model.apply({"params": params}, source, cache_mode="prefill",
                         cache_length=cache_length, heads=(), mutable=["cache"])

  def step_fn(tokens, step, cache):
    positions = jnp.full((tokens.shape[0], 1), TARGET_START_POSITION, jnp.int32) + step
    out, new = model.apply({"params": params, "cache": cache},
                           {"input_ids": tokens[:, None], "position_ids": positions},
                           cache_mode="step", mutable=["cache"])
    return out["lm_logits"][:, 0], new["cache"]

  cache = state["cache"]
  return decode(step_fn, cache, unimo_cache_axes(cache), batch_size, settings, bos_id=bos_id,
                eos_id=eos_id, pad_id=pad_id, rng=rng, valid_vocab=valid_vocab,
                word_starts=word_starts)


def generate_without_cache(model, params, source: dict, settings: DecodeSettings, *, bos_id: int,
                           eos_id: int, pad_id: int, rng=None,
                           valid_vocab: int | None = None, word_starts=None) -> dict:
  """The same search, re-encoding source + the whole target prefix at every step (no cache):
  the reference the cached decoder must equal, and the baseline of benchmarks/decoding.py."""
  batch_size = jax.tree.leaves(source)[0].shape[0]
  t_max = settings.max_length
  text = "input_ids" in source
  # The decoded prefix lives in the "cache": [n, t_max + 1] tokens, BOS first.
  prefix = jnp.full((batch_size, t_max + 1), pad_id, jnp.int32).at[:, 0].set(bos_id)
  cache = {"prefix": prefix, "source_rows": jnp.arange(batch_size)}

  def step_fn(tokens, step, cache):
    rows = cache["source_rows"]
    prefix = cache["prefix"].at[:, step].set(tokens)
    src = jax.tree.map(lambda x: jnp.take(x, rows, axis=0), source)
    n = tokens.shape[0]
    target_positions = TARGET_START_POSITION + jnp.arange(t_max + 1)[None].repeat(n, 0)
    target_positions = jnp.where(prefix == pad_id, pad_id, target_positions)
    source_ids = src.get("input_ids", jnp.zeros((n, 0), jnp.int32))
    source_positions = src.get("position_ids", jnp.zeros((n, 0), jnp.int32))
    batch = dict(src, input_ids=jnp.concatenate([source_ids, prefix], 1),
                 position_ids=jnp.concatenate([source_positions, target_positions], 1),
                 target_mask=jnp.concatenate([jnp.zeros(source_ids.shape, bool),
                                              jnp.ones(prefix.shape, bool)], 1))
    for name in ("role_ids", "turn_ids"):  # dialog sources: the target's role and turn are 0
      if name in src:
        batch[name] = jnp.concatenate([src[name], jnp.zeros(prefix.shape, jnp.int32)], 1)
    kind = "seq2seq" if text else "caption"
    out = model.apply({"params": params}, batch, mask_kind=kind, heads=("lm",))
    logits = jnp.take(out["lm_logits"], source_ids.shape[1] + step, axis=1)
    return logits, {"prefix": prefix, "source_rows": rows}

  axes = {"prefix": 0, "source_rows": 0}
  return decode(step_fn, cache, axes, batch_size, settings, bos_id=bos_id, eos_id=eos_id,
                pad_id=pad_id, rng=rng, valid_vocab=valid_vocab, word_starts=word_starts)


def jitted_generate(model, settings: DecodeSettings, *, bos_id: int, eos_id: int, pad_id: int,
                    valid_vocab: int | None = None, use_cache: bool = True, word_starts=None):
  """A jitted (params, source, rng) -> decode output; keep it to reuse the compilation."""
  fn = generate if use_cache else generate_without_cache
  return jax.jit(lambda p, s, r: fn(model, p, s, settings, bos_id=bos_id, eos_id=eos_id,
                                    pad_id=pad_id, rng=r, valid_vocab=valid_vocab,
                                    word_starts=word_starts))
