"""Beam search, greedy and sampling against exhaustive search on a toy model, and the UNIMO
cached decoder against full recomputation (on one device and under an 8-device mesh)."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unimo_jax.decoding.search import (DecodeSettings, _unblocked_top_k, beam_search, decode,
                                      repeats_word_trigram, sample)
from unimo_jax.decoding.generate import generate, generate_without_cache
from unimo_jax.model.params import init_params
from unimo_jax.model.presets import model_config
from unimo_jax.model.unimo import Unimo
from unimo_jax.parallel import DEFAULT_LOGICAL_AXIS_RULES, make_mesh, rules_from_config
from unimo_jax.data.synthetic.random_batch import random_regions, random_text

VOCAB, BOS, EOS, PAD = 5, 0, 2, 1


def toy_table(seed, steps):
  """Logits [step, prev2, prev1, vocab]: a model whose next token depends on the last two."""
  rng = np.random.default_rng(seed)
  table = rng.normal(scale=1.5, size=(steps, VOCAB, VOCAB, VOCAB)).astype(np.float32)
  table[..., 3] += 1.0  # a favourite token, so repeats (and blocked trigrams) occur
  return table


def toy_step_fn(table):
  table = jnp.asarray(table)

  def step_fn(tokens, step, cache):
    history = jnp.concatenate([cache["history"][:, 1:], tokens[:, None]], axis=1)  # [n, 2]
    return table[step, history[:, 0], history[:, 1]], {"history": history}
  return step_fn


def toy_cache(batch):
  return {"history": jnp.full((batch, 2), BOS, jnp.int32)}, {"history": 0}


def exhaustive(table, max_length, alpha, min_length=0, trigram_blocking=False):
  """Every finished hypothesis with its penalised score, best first (ties by sequence). Before
  min_length, EOS is taken out of the softmax (UNIMO's rule: -inf added to its logit), so the
  other tokens' probabilities renormalise."""
  table = np.array(table)
  table[:min_length, :, :, EOS] = -np.inf
  log_probs = np.asarray(jax.nn.log_softmax(jnp.asarray(table), axis=-1))
  results = []
  for length in range(1, max_length + 1):
    for seq in itertools.product(range(VOCAB), repeat=length):
      if EOS in seq[:-1] or (seq[-1] != EOS and length < max_length):
        continue
      if seq[-1] == EOS and length - 1 < min_length:
        continue
      trigrams = [seq[i:i + 3] for i in range(length - 2)]
      if trigram_blocking and len(set(trigrams)) < len(trigrams):
        continue
      history, total = (BOS, BOS), 0.0
      for step, token in enumerate(seq):
        total += log_probs[step, history[0], history[1], token]
        history = (history[1], token)
      results.append((total / ((5 + length) / 6) ** alpha, seq))
  return sorted(results, key=lambda r: -r[0])


@pytest.mark.parametrize("alpha,min_length,trigram", [
    (0.0, 0, False), (0.6, 0, False), (2.0, 0, False), (0.6, 2, False), (0.6, 0, True),
    (1.0, 1, True)])
def test_wide_beam_equals_exhaustive_search(alpha, min_length, trigram):
  max_length = 5 if trigram else 4
  table = toy_table(seed=int(alpha * 10) + min_length, steps=max_length)
  beams = 4 ** (max_length - 1)  # every live hypothesis fits
  settings = DecodeSettings(beam_size=beams, alpha=alpha, min_length=min_length,
                            max_length=max_length, trigram_blocking=trigram)
  cache, axes = toy_cache(1)
  out = jax.jit(lambda c: beam_search(toy_step_fn(table), c, axes, 1, settings, bos_id=BOS,
                                      eos_id=EOS, pad_id=PAD))(cache)
  expected = exhaustive(table, max_length, alpha, min_length, trigram)
  top = min(beams, len(expected))
  np.testing.assert_allclose(np.asarray(out["scores"][0, :top]),
                             [s for s, _ in expected[:top]], rtol=1e-5, atol=1e-5)
  best_len = int(out["lengths"][0, 0])
  assert tuple(np.asarray(out["sequences"][0, 0, :best_len])) == expected[0][1]
  assert np.all(np.asarray(out["sequences"][0, 0, best_len:]) == PAD)


def test_trigram_blocking_changes_the_best_sequence():
  table = np.full((5, VOCAB, VOCAB, VOCAB), -4.0, np.float32)
  table[..., 3] = 4.0  # "3 3 3 3 3" is by far the most likely
  table[4, :, :, EOS] = 3.0
  settings = DecodeSettings(beam_size=8, alpha=0.0, min_length=4, max_length=5,
                            trigram_blocking=True)
  cache, axes = toy_cache(1)
  out = beam_search(toy_step_fn(table), cache, axes, 1, settings, bos_id=BOS, eos_id=EOS,
                    pad_id=PAD)
  best = [int(t) for t in out["sequences"][0, 0, :int(out["lengths"][0, 0])]]
  trigrams = [tuple(best[i:i + 3]) for i in range(len(best) - 2)]
  assert len(set(trigrams)) == len(trigrams)
  assert best[:3] == [3, 3, 3] and best[3] != 3
  unblocked = beam_search(toy_step_fn(table), cache, axes, 1,
                          DecodeSettings(beam_size=8, alpha=0.0, min_length=4, max_length=5),
                          bos_id=BOS,
                          eos_id=EOS, pad_id=PAD)
  assert [int(t) for t in unblocked["sequences"][0, 0, :4]] == [3, 3, 3, 3]


def unimo_blocks_trigram(pieces, is_full_token):
  """UNIMO's TrigramBlocking.blocking_forward for one candidate sequence, written out: merge
  pieces into words (a full token, or the first piece, starts one), join them as strings, and
  block when the last word trigram is among the earlier ones."""
  words = []
  for piece in pieces:
    if is_full_token[piece] or not words:
      words.append([piece])
    else:
      words[-1].append(piece)
  words = ["-".join(map(str, w)) for w in words]
  if len(words) <= 3:
    return False
  earlier = {"_".join(words[end - 3:end]) for end in range(3, len(words))}
  return "_".join(words[-3:]) in earlier


def test_word_trigram_rule_equals_unimo_reference():
  rng = np.random.default_rng(0)
  vocab, t_max, n, c = 7, 12, 64, 3
  bos = vocab  # a piece of its own, as UNIMO's [CLS] at the start of every hypothesis
  checked = blocked_count = 0
  for trial in range(6):
    word_starts = rng.random(vocab) < 0.6
    full = list(word_starts) + [False]  # [CLS] is not a full token
    # half the rows repeat a short pattern, so that repeated trigrams occur
    generated = rng.integers(0, vocab, size=(n, t_max))
    for i in range(0, n, 2):
      generated[i] = np.resize(rng.integers(0, vocab, size=rng.integers(2, 5)), t_max)
    for step in (0, 2, 5, 8, t_max - 1):
      candidates = rng.integers(0, vocab, size=(n, c))
      candidates[::2, 0] = generated[::2, max(step - 4, 0)]  # often the pattern's next piece
      got = np.asarray(repeats_word_trigram(jnp.asarray(generated), step, jnp.asarray(candidates),
                                            jnp.asarray(word_starts)))
      for i in range(n):
        for j in range(c):
          pieces = [bos, *generated[i, :step], candidates[i, j]]
          expected = unimo_blocks_trigram(pieces, full)
          assert got[i, j] == expected, (trial, step, pieces, list(word_starts))
          checked += 1
          blocked_count += expected
  assert checked == 6 * 5 * n * c and 100 < blocked_count < checked // 2


def test_word_trigram_blocking_by_hand():
  # pieces 10, 11, 12 begin words; 20, 21 continue one: [10 20 21] is one three-piece word
  word_starts = np.zeros(30, bool)
  word_starts[[10, 11, 12]] = True
  starts = jnp.asarray(word_starts)

  def blocked(prefix, candidate):
    generated = jnp.asarray([prefix + [0] * (8 - len(prefix))])
    return bool(repeats_word_trigram(generated, len(prefix), jnp.asarray([[candidate]]),
                                     starts)[0, 0])

  # the word "10-20-21" may appear twice (sub-word trigram (10, 20, 21) repeats; no word does)
  assert not blocked([10, 20, 21, 11, 12, 10, 20], 21)
  # a repeated word trigram is blocked: 10 11 12 10 11 | 12
  assert blocked([10, 11, 12, 10, 11], 12)
  # ... unless the candidate continues the last word: 10 11 12 10 11-20 is a new trigram
  assert not blocked([10, 11, 12, 10, 11], 20)
  # words compared piece by piece: "10-20" then 11 12 vs "10-20-21" 11 12
  assert not blocked([10, 20, 11, 12, 10, 20, 21, 11], 12)
  assert blocked([10, 20, 11, 12, 10, 20, 11], 12)


def test_trigram_blocking_keeps_only_the_unblocked_top_k():
  # row 0's best token (3) repeats the trigram (3, 4, 3); with k = 2 only token 4 (rank 2) stays
  # and rank 3 (token 0) is not promoted; row 1 blocks nothing and keeps its top 2
  log_probs = jnp.log(jnp.asarray([[0.15, 0.05, 0.1, 0.4, 0.3],
                                   [0.3, 0.1, 0.2, 0.25, 0.15]]))
  generated = jnp.asarray([[3, 4, 3, 4, 0, 0], [0, 1, 2, 0, 0, 0]])
  kept = np.asarray(_unblocked_top_k(log_probs, generated, 4, 2, jnp.ones(5, bool)))
  alive = kept > -1e8
  assert alive.tolist() == [[False, False, False, False, True],
                            [True, False, False, True, False]]
  np.testing.assert_allclose(kept[alive], np.asarray(log_probs)[alive])


def test_min_length_is_respected_and_eos_ends_hypotheses():
  table = np.zeros((6, VOCAB, VOCAB, VOCAB), np.float32)
  table[..., EOS] = 5.0  # EOS at once unless forbidden
  cache, axes = toy_cache(2)
  for min_length in (0, 3):
    settings = DecodeSettings(beam_size=3, alpha=0.6, min_length=min_length, max_length=6)
    out = beam_search(toy_step_fn(table), cache, axes, 2, settings, bos_id=BOS, eos_id=EOS,
                      pad_id=PAD)
    assert np.all(np.asarray(out["lengths"][:, 0]) == min_length + 1)
    seq = np.asarray(out["sequences"][0, 0])
    assert seq[min_length] == EOS and EOS not in seq[:min_length]
    greedy = sample(toy_step_fn(table), cache, 2,
                    DecodeSettings(method="greedy", min_length=min_length, max_length=6),
                    bos_id=BOS, eos_id=EOS, pad_id=PAD)
    assert np.all(np.asarray(greedy["lengths"]) == min_length + 1)


def test_min_length_renormalises_without_eos_as_the_original():
  """UNIMO adds -inf to the EOS logit before the softmax (src/finetune/seq2seq.py): before
  min_length the other tokens share all the probability. Hand computation on one step."""
  table = np.zeros((3, VOCAB, VOCAB, VOCAB), np.float32)
  first = np.array([1.0, 0.0, 5.0, 2.0, 0.5], np.float32)  # EOS (id 2) the likeliest
  table[0] = first
  table[1:, ..., EOS] = 8.0  # then EOS at once
  cache, axes = toy_cache(1)
  out = beam_search(toy_step_fn(table), cache, axes, 1,
                    DecodeSettings(beam_size=2, alpha=0.0, min_length=1, max_length=3),
                    bos_id=BOS, eos_id=EOS, pad_id=PAD)
  allowed = np.delete(first, EOS)
  renormalised = first[3] - np.log(np.exp(allowed).sum())
  eos_next = 8.0 - np.log(np.exp(8.0) + VOCAB - 1)
  assert tuple(np.asarray(out["sequences"][0, 0, :2])) == (3, EOS)
  np.testing.assert_allclose(float(out["scores"][0, 0]), renormalised + eos_next, rtol=1e-6)
  masked_after = first[3] - np.log(np.exp(first).sum())  # EOS forbidden after the softmax
  assert abs((renormalised + eos_next) - (masked_after + eos_next)) > 1.0


def test_greedy_is_the_argmax_chain_and_beam_one_agrees():
  table = toy_table(seed=7, steps=6)
  cache, axes = toy_cache(1)
  settings = DecodeSettings(method="greedy", max_length=6)
  out = sample(toy_step_fn(table), cache, 1, settings, bos_id=BOS, eos_id=EOS, pad_id=PAD)
  history, expected = (BOS, BOS), []
  for step in range(6):
    token = int(np.argmax(table[step, history[0], history[1]]))
    expected.append(token)
    if token == EOS:
      break
    history = (history[1], token)
  n = int(out["lengths"][0])
  assert [int(t) for t in out["sequences"][0, :n]] == expected
  beam = beam_search(toy_step_fn(table), cache, axes, 1,
                     DecodeSettings(beam_size=1, alpha=0.0, max_length=6), bos_id=BOS,
                     eos_id=EOS, pad_id=PAD)
  assert [int(t) for t in beam["sequences"][0, 0, :int(beam["lengths"][0, 0])]] == expected
  np.testing.assert_allclose(float(beam["scores"][0, 0]), float(out["scores"][0]), rtol=1e-6)


def test_sampling_follows_the_filtered_distribution():
  table = toy_table(seed=3, steps=1)
  n = 20_000
  cache, _ = toy_cache(n)
  probs = np.asarray(jax.nn.softmax(jnp.asarray(table[0, BOS, BOS]) / 0.7))
  settings = DecodeSettings(method="sample", max_length=1, temperature=0.7)
  out = sample(toy_step_fn(table), cache, n, settings, bos_id=BOS, eos_id=EOS, pad_id=PAD,
               rng=jax.random.key(0))
  freq = np.bincount(np.asarray(out["sequences"][:, 0]), minlength=VOCAB) / n
  np.testing.assert_allclose(freq, probs, atol=0.015)  # ~4 standard errors at n = 20k

  top2 = np.argsort(-probs)[:2]
  out = sample(toy_step_fn(table), cache, n, DecodeSettings(method="sample", max_length=1,
                                                            temperature=0.7, top_k=2),
               bos_id=BOS, eos_id=EOS, pad_id=PAD, rng=jax.random.key(1))
  freq = np.bincount(np.asarray(out["sequences"][:, 0]), minlength=VOCAB) / n
  np.testing.assert_allclose(freq[top2], probs[top2] / probs[top2].sum(), atol=0.015)
  assert freq.sum() - freq[top2].sum() == 0
  # nucleus: keep the fewest most-likely tokens whose mass reaches top_p
  order = np.argsort(-probs)
  keep = order[:int(np.searchsorted(np.cumsum(probs[order]), 0.8) + 1)]
  out = sample(toy_step_fn(table), cache, n, DecodeSettings(method="sample", max_length=1,
                                                            temperature=0.7, top_p=0.8),
               bos_id=BOS, eos_id=EOS, pad_id=PAD, rng=jax.random.key(2))
  freq = np.bincount(np.asarray(out["sequences"][:, 0]), minlength=VOCAB) / n
  np.testing.assert_allclose(freq[keep], probs[keep] / probs[keep].sum(), atol=0.015)
  assert freq.sum() - freq[keep].sum() == 0


def test_bad_settings_are_named():
  with pytest.raises(ValueError, match="min_length"):
    DecodeSettings(min_length=5, max_length=5)
  with pytest.raises(ValueError, match="method"):
    DecodeSettings(method="nucleus")
  with pytest.raises(ValueError, match="unknown fields"):
    DecodeSettings.from_config({"beam": 3})
  with pytest.raises(ValueError, match="rng"):
    cache, _ = toy_cache(1)
    sample(toy_step_fn(toy_table(0, 2)), cache, 1, DecodeSettings(method="sample", max_length=2),
           bos_id=BOS, eos_id=EOS, pad_id=PAD)


# ---- the UNIMO decoder ---------------------------------------------------------------------------

def _model_and_source(scan_layers, text_source, batch=2):
  config = model_config("tiny")
  config.scan_layers = scan_layers
  params = init_params(config, jax.random.key(4))
  rng = np.random.default_rng(5)
  if text_source:
    source = {"input_ids": random_text(config, rng, batch=batch, length=7, lengths=[7, 5] * (
        batch // 2))}
    source["position_ids"] = np.where(source["input_ids"] != 1,
                                      np.arange(2, 9)[None], 1).astype(np.int32)
  else:
    source = random_regions(config, rng, batch=batch, regions=4, counts=[4, 2] * (batch // 2))
  return Unimo(config), params, source


@pytest.mark.parametrize("scan_layers,text_source", [(False, False), (True, True)])
def test_cached_generation_equals_full_recomputation(scan_layers, text_source):
  model, params, source = _model_and_source(scan_layers, text_source)
  ids = dict(bos_id=0, eos_id=2, pad_id=1)
  for settings in (DecodeSettings(beam_size=3, alpha=0.6, max_length=6, min_length=1),
                   DecodeSettings(method="greedy", max_length=6, trigram_blocking=True)):
    cached = jax.jit(lambda p, s: generate(model, p, s, settings, **ids))(params, source)
    full = jax.jit(lambda p, s: generate_without_cache(model, p, s, settings, **ids))(params,
                                                                                       source)
    np.testing.assert_array_equal(np.asarray(cached["sequences"]), np.asarray(full["sequences"]))
    np.testing.assert_allclose(np.asarray(cached["scores"]), np.asarray(full["scores"]),
                               atol=1e-4)


def test_generation_under_a_mesh_equals_one_device():
  model, params, source = _model_and_source(False, False, batch=8)
  settings = DecodeSettings(beam_size=3, alpha=0.6, max_length=5)
  ids = dict(bos_id=0, eos_id=2, pad_id=1)
  single = jax.jit(lambda p, s: generate(model, p, s, settings, **ids))(params, source)
  mesh = make_mesh({"data": 4, "fsdp": 2, "tensor": 1})
  rules = rules_from_config([list(r) for r in DEFAULT_LOGICAL_AXIS_RULES])
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
    sharded_source = jax.device_put(source, sharding)
    sharded = jax.jit(lambda p, s: generate(model, p, s, settings, **ids))(params, sharded_source)
  np.testing.assert_array_equal(np.asarray(sharded["sequences"]), np.asarray(single["sequences"]))
  np.testing.assert_allclose(np.asarray(sharded["scores"]), np.asarray(single["scores"]), atol=1e-5)


def test_decode_dispatches_on_method():
  table = toy_table(seed=1, steps=3)
  cache, axes = toy_cache(2)
  ids = dict(bos_id=BOS, eos_id=EOS, pad_id=PAD)
  beam = decode(toy_step_fn(table), cache, axes, 2, DecodeSettings(beam_size=2, max_length=3),
                **ids)
  greedy = decode(toy_step_fn(table), cache, axes, 2,
                  DecodeSettings(method="greedy", max_length=3), **ids)
  assert beam["sequences"].shape == (2, 2, 3) and greedy["sequences"].shape == (2, 3)


def test_ids_past_the_tokenizer_vocabulary_are_never_generated():
  table = np.zeros((4, VOCAB, VOCAB, VOCAB), np.float32)
  table[..., 4] = 9.0  # the favourite token lies past a 4-id tokenizer
  cache, axes = toy_cache(2)
  ids = dict(bos_id=BOS, eos_id=EOS, pad_id=PAD, valid_vocab=4)
  for settings in (DecodeSettings(beam_size=3, max_length=4),
                   DecodeSettings(method="greedy", max_length=4)):
    out = decode(toy_step_fn(table), cache, axes, 2, settings, **ids)
    assert int(np.asarray(out["sequences"]).max()) < 4
  unlimited = decode(toy_step_fn(table), cache, axes, 2,
                     DecodeSettings(method="greedy", max_length=4), bos_id=BOS, eos_id=EOS,
                     pad_id=PAD)
  assert np.all(np.asarray(unlimited["sequences"]) == 4)


def test_beam_search_keeps_each_devices_cache_rows_on_that_device():
  """A cache whose batch axis is split over 8 devices stays split through the search: each
  device expands and reorders only its own sources' beams. Gathering beams over the flat
  [sources * beams] axis made XLA replicate the expanded cache on every device (12 GiB per chip
  for the base decode loops on v5e-8, docs/tpu_sizing.md)."""
  b, k, length, width = 64, 4, 64, 256
  rng = np.random.default_rng(0)
  embed = jnp.asarray(rng.normal(size=(VOCAB, width)), jnp.float32)
  out_proj = jnp.asarray(rng.normal(size=(width, VOCAB)), jnp.float32)

  def step_fn(tokens, step, cache):  # writes each row's token into its payload, reads it all
    payload = jax.lax.dynamic_update_slice(cache["payload"], embed[tokens][:, None], (0, step, 0))
    return payload.mean(axis=1) @ out_proj, {"payload": payload}

  mesh = make_mesh({"data": 8, "fsdp": 1, "tensor": 1})
  settings = DecodeSettings(beam_size=k, alpha=0.6, max_length=8)
  search = jax.jit(lambda c: beam_search(step_fn, c, {"payload": 0}, b, settings, bos_id=BOS,
                                         eos_id=EOS, pad_id=PAD))
  with jax.set_mesh(mesh):
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    payload = jax.ShapeDtypeStruct((b, length, width), jnp.float32, sharding=sharding)
    temporaries = search.lower({"payload": payload}).compile().memory_analysis().temp_size_in_bytes
  shard = b * k * length * width * 4 / 8  # one device's beams' payload
  # the loop holds the payload and its reordered copy: 2 shards (a replicated cache: 16)
  assert temporaries < 3 * shard, (temporaries, shard)
