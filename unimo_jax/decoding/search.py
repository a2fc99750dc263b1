"""Beam search, greedy decoding and top-k / top-p sampling over an incremental cache.

The search is model-agnostic. A step function takes the token fed at this step and returns the
next-token logits and the updated cache:

  step_fn(tokens [n] int32, step int32 scalar, cache) -> (logits [n, vocab] float32, cache)

Step 0 feeds BOS; step t feeds the t-th generated token. `cache_axes` says, for every cache leaf,
which axis is the batch (n) axis, or -1 for leaves shared by the batch (e.g. a write index);
beams are kept by gathering cache rows along that axis, within each source (a source's beams stay
on the device that holds the source). decoding/generate.py adapts the UNIMO model.

Scoring (GNMT, as UNIMO's fast_decode): a finished hypothesis of `length` generated tokens (EOS
included; a hypothesis cut at max_length has no EOS) scores sum(log p) / ((5 + length) / 6)^alpha.
While fewer than `min_length` tokens precede it, EOS is taken out of the next-token distribution
before the softmax, so the other tokens' probabilities renormalise (UNIMO's
src/finetune/seq2seq.py adds -inf to the EOS logit, `fc_out + eos_val`, then takes the softmax).
With trigram blocking (UNIMO's src/finetune/trigram_blocking.py), sub-word pieces merge into
words and only each beam's beam_size most likely tokens are candidates; a candidate that would
repeat a word trigram of its hypothesis is dropped (after the softmax: the remaining
probabilities are not renormalised). Greedy decoding and sampling apply the same rule.

Everything runs inside one `lax.while_loop`; the functions are pure and jit under a mesh like the
model they call (the batch axis is sharded as the model's activations are).
"""

import dataclasses

import jax
import jax.numpy as jnp

NEG_INF = -1.0e9  # finite, so (-inf) - (-inf) never produces NaN in the merges below
METHODS = ("beam", "greedy", "sample")


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
  method: str = "beam"  # 'beam', 'greedy' or 'sample'
  beam_size: int = 5
  alpha: float = 0.6  # GNMT length penalty exponent; 0 = plain sum of log-probabilities
  min_length: int = 0
  max_length: int = 20
  trigram_blocking: bool = False
  temperature: float = 1.0  # sampling only
  top_k: int = 0  # sampling only; 0 = no top-k cut
  top_p: float = 1.0  # sampling only; 1 = no nucleus cut

  def __post_init__(self):
    if self.method not in METHODS:
      raise ValueError(f"decode.method: expected one of {METHODS}, found {self.method!r}")
    if self.max_length < 1 or self.min_length < 0 or self.min_length >= self.max_length:
      raise ValueError(f"decode lengths: expected 0 <= min_length < max_length and max_length >= "
                       f"1, found min_length={self.min_length}, max_length={self.max_length}")
    if self.method == "beam" and self.beam_size < 1:
      raise ValueError(f"decode.beam_size: expected >= 1, found {self.beam_size}")
    if not 0.0 < self.top_p <= 1.0 or self.top_k < 0:
      raise ValueError(f"decode: expected 0 < top_p <= 1 and top_k >= 0, found top_p="
                       f"{self.top_p}, top_k={self.top_k}")

  @classmethod
  def from_config(cls, config):
    """From an ml_collections ConfigDict (or dict) with any of the fields above."""
    known = {f.name for f in dataclasses.fields(cls)}
    values = dict(config)
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"decode: unknown fields {unknown}; expected some of {sorted(known)}")
    return cls(**values)


def length_penalty(length, alpha: float):
  """GNMT's ((5 + length) / 6) ** alpha."""
  return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def expand_cache(cache, cache_axes, beams: int):
  """Every cache leaf with each source row repeated `beams` times along its batch axis ([b] ->
  [b * beams], a source's beams adjacent). A broadcast, not a gather: the batch axis keeps its
  sharding, and each device expands only its own sources."""
  return jax.tree.map(lambda leaf, axis: leaf if axis < 0 else jnp.repeat(leaf, beams, axis),
                      cache, cache_axes)


def reorder_beams(cache, cache_axes, parent):
  """Every cache leaf with each source's beams re-indexed by parent [b, k] (the beam each new
  beam continues), within the source. The batch axis [b * k] is viewed as [b, k] and gathered
  along k only, so a source's rows never leave the device that holds them (a gather over the
  flat batch axis makes XLA's partitioner replicate the whole cache on every device)."""
  b, k = parent.shape

  def one(leaf, axis):
    if axis < 0:
      return leaf
    split = leaf.reshape(leaf.shape[:axis] + (b, k) + leaf.shape[axis + 1:])  # [..., b, k, ...]
    index = parent.reshape((1,) * axis + (b, k) + (1,) * (leaf.ndim - axis - 1))
    return jnp.take_along_axis(split, index, axis=axis + 1, mode="clip").reshape(leaf.shape)
  return jax.tree.map(one, cache, cache_axes)


def repeats_word_trigram(generated, step, candidates, word_starts):
  """[n, c] bool: whether appending candidates[:, j] to row i repeats a word trigram.

  UNIMO's rule (src/finetune/trigram_blocking.py): the sequence is BOS, the `step` tokens of
  generated [n, max_length] produced so far, then the candidate; pieces merge into words (a piece
  begins a word when word_starts[piece], BOS always does); with more than three words, the last
  word trigram must not equal an earlier one (words compared piece by piece).
  candidates [n, c] int; word_starts [vocab] bool.
  """
  n, t_max = generated.shape
  c = candidates.shape[1]
  length = t_max + 2  # BOS, up to t_max generated tokens, the candidate
  slot = jnp.arange(length)
  end = step + 1  # the candidate's slot
  prefix = jnp.concatenate([jnp.full((n, 1), -1, generated.dtype), generated,
                            jnp.zeros((n, 1), generated.dtype)], axis=1)  # [n, length]
  # [n, c, length]: every candidate in its slot after its row's prefix
  seq = jnp.where(slot[None, None] == end, candidates[..., None], prefix[:, None])
  # BOS begins a word; past the end counts as a boundary
  starts = jnp.take(word_starts, seq, axis=0) | (slot == 0) | (slot > end)
  word = jnp.cumsum(starts & (slot <= end), axis=-1) - 1  # word index of every slot
  last = jnp.take_along_axis(word, jnp.full((n, c, 1), end), axis=-1)  # [n, c, 1]
  a0 = jnp.argmax(word == last - 2, axis=-1)[..., None]  # first slot of the last trigram
  span = end - a0 + 1  # its pieces, [n, c, 1]
  offsets = jnp.arange(length)
  window = jnp.minimum(slot[:, None] + offsets[None], length - 1)  # [length(p), length(i)]
  tail = jnp.minimum(a0 + offsets, length - 1)  # [n, c, length(i)]
  last_seq = jnp.take_along_axis(seq, tail, axis=-1)[..., None, :]  # [n, c, 1, i]
  last_starts = jnp.take_along_axis(starts, tail, axis=-1)[..., None, :]
  same = (seq[..., window] == last_seq) & (starts[..., window] == last_starts)  # [n, c, p, i]
  in_span = offsets[None, None, None] < span[..., None]
  equal = jnp.all(same | ~in_span, axis=-1)  # [n, c, p]
  after = jnp.take_along_axis(starts, jnp.minimum(slot + span, length - 1), axis=-1)
  earlier = starts & (slot < a0) & after & equal  # an earlier trigram with the same pieces
  return jnp.any(earlier, axis=-1) & (last[..., 0] >= 3)


def _unblocked_top_k(log_probs, generated, step, k, word_starts):
  """log_probs kept only for each row's k most likely tokens that repeat no word trigram (UNIMO
  checks the beam's top-k candidates and pushes a repeating one out of the search)."""
  values, tokens = jax.lax.top_k(log_probs, k)  # [n, k]
  blocked = repeats_word_trigram(generated, step, tokens, word_starts)
  values = jnp.where(blocked, NEG_INF, values)
  rows = jnp.arange(log_probs.shape[0])[:, None]
  return jnp.full_like(log_probs, NEG_INF).at[rows, tokens].set(values)


def _constrained_log_probs(logits, generated, step, settings, eos_id, valid_vocab=None,
                           word_starts=None):
  """log-softmax over the tokens allowed at `step`: EOS is left out of the softmax before
  min_length (the rest renormalise), ids from `valid_vocab` on are never produced (a model's
  table may be padded past its tokenizer); with trigram blocking, only each row's beam_size most
  likely tokens that repeat no word trigram stay (after the softmax: no renormalisation).
  word_starts [vocab] bool marks the pieces that begin a word (None: every piece is a word)."""
  vocab = logits.shape[-1]
  logits = logits.astype(jnp.float32)  # [n, vocab]
  if valid_vocab is not None and valid_vocab < vocab:
    logits = jnp.where(jnp.arange(vocab) < valid_vocab, logits, NEG_INF)
  is_eos = jnp.arange(vocab) == eos_id
  logits = jnp.where(is_eos[None] & (step < settings.min_length), NEG_INF, logits)
  log_probs = jax.nn.log_softmax(logits, axis=-1)  # [n, vocab]
  if settings.trigram_blocking:
    starts = jnp.ones(vocab, bool) if word_starts is None else jnp.asarray(word_starts, bool)
    if starts.shape != (vocab,):
      raise ValueError(f"word_starts: expected shape [{vocab}] (the logits' vocabulary), found "
                       f"{list(starts.shape)}")
    log_probs = _unblocked_top_k(log_probs, generated, step, min(settings.beam_size, vocab),
                                 starts)
  return log_probs


def beam_search(step_fn, cache, cache_axes, batch_size: int, settings: DecodeSettings, *,
                bos_id: int, eos_id: int, pad_id: int, valid_vocab: int | None = None,
                word_starts=None):
  """Beam search. `cache` holds batch_size rows (one per source); it is expanded to beams here.

  Returns a dict, hypotheses sorted best first:
    sequences [batch, beams, max_length] generated tokens (EOS included), pad after the end;
    scores    [batch, beams] length-penalised log-probabilities (NEG_INF: no hypothesis);
    lengths   [batch, beams] generated tokens, EOS included.
  """
  b, k, t_max = batch_size, settings.beam_size, settings.max_length
  cache = expand_cache(cache, cache_axes, k)  # [b * k] rows, a source's beams adjacent
  flat = lambda x: x.reshape((b * k,) + x.shape[2:])

  state = {
      "step": jnp.int32(0),
      "last": jnp.full((b, k), bos_id, jnp.int32),
      "live": jnp.full((b, k, t_max), pad_id, jnp.int32),
      "live_logp": jnp.tile(jnp.array([0.0] + [NEG_INF] * (k - 1), jnp.float32), (b, 1)),
      "done": jnp.full((b, k, t_max), pad_id, jnp.int32),
      "done_score": jnp.full((b, k), NEG_INF, jnp.float32),
      "done_length": jnp.zeros((b, k), jnp.int32),
      "cache": cache,
  }

  def keep_going(s):
    # Stop when no live beam can still beat the k-th finished hypothesis: a live log-probability
    # only falls, and the length penalty is at most lp(max_length).
    best_possible = s["live_logp"][:, 0] / length_penalty(t_max, settings.alpha)
    beaten = jnp.all(s["done_score"][:, -1] >= best_possible)
    return (s["step"] < t_max) & ~beaten

  def body(s):
    step = s["step"]
    logits, cache = step_fn(flat(s["last"]), step, s["cache"])
    log_probs = _constrained_log_probs(logits, flat(s["live"]), step, settings, eos_id,
                                       valid_vocab, word_starts)
    vocab = log_probs.shape[-1]
    cand = (s["live_logp"][..., None] + log_probs.reshape(b, k, vocab)).reshape(b, k * vocab)
    top_logp, top_index = jax.lax.top_k(cand, min(2 * k, k * vocab))  # [b, 2k]
    beam, token = top_index // vocab, top_index % vocab
    seqs = jnp.take_along_axis(s["live"], beam[..., None], axis=1)
    seqs = jax.vmap(jax.vmap(lambda q, tok: q.at[step].set(tok)))(seqs, token)  # [b, 2k, t_max]
    length = step + 1
    ends = (token == eos_id) | (length >= t_max)
    real = top_logp > NEG_INF / 2

    # finished: merge the candidates that end here with the kept hypotheses, keep the best k
    fin_score = jnp.where(ends & real, top_logp / length_penalty(length, settings.alpha), NEG_INF)
    all_score = jnp.concatenate([s["done_score"], fin_score], axis=1)
    all_seqs = jnp.concatenate([s["done"], seqs], axis=1)
    all_len = jnp.concatenate([s["done_length"], jnp.full_like(fin_score, length, jnp.int32)], 1)
    done_score, keep = jax.lax.top_k(all_score, k)
    done = jnp.take_along_axis(all_seqs, keep[..., None], axis=1)
    done_length = jnp.take_along_axis(all_len, keep, axis=1)

    # live: the best k candidates that did not end
    live_logp, keep = jax.lax.top_k(jnp.where(ends, NEG_INF, top_logp), k)
    live = jnp.take_along_axis(seqs, keep[..., None], axis=1)
    parent = jnp.take_along_axis(beam, keep, axis=1)  # [b, k]
    cache = reorder_beams(cache, cache_axes, parent)
    return {"step": step + 1, "last": jnp.take_along_axis(token, keep, axis=1), "live": live,
            "live_logp": live_logp, "done": done, "done_score": done_score,
            "done_length": done_length, "cache": cache}

  final = jax.lax.while_loop(keep_going, body, state)
  slot = jnp.arange(t_max)
  sequences = jnp.where(slot[None, None] < final["done_length"][..., None], final["done"], pad_id)
  return {"sequences": sequences, "scores": final["done_score"], "lengths": final["done_length"]}


def _filter_logits(logits, top_k: int, top_p: float):
  """Logits outside the top-k, or outside the smallest set whose probability reaches top_p,
  set to NEG_INF (the most likely token always stays)."""
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, NEG_INF, logits)
  if top_p < 1.0:
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass of the strictly more likely tokens
    keep_sorted = before < top_p
    keep = jnp.zeros_like(keep_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(
        keep_sorted)
    logits = jnp.where(keep, logits, NEG_INF)
  return logits


def sample(step_fn, cache, batch_size: int, settings: DecodeSettings, *, bos_id: int, eos_id: int,
           pad_id: int, rng=None, valid_vocab: int | None = None, word_starts=None):
  """Greedy (settings.method == 'greedy') or top-k / top-p sampling at settings.temperature.

  Returns {'sequences' [batch, max_length], 'scores' [batch] (sum of log p of the chosen tokens
  under the unfiltered model), 'lengths' [batch]}.
  """
  greedy = settings.method == "greedy"
  if not greedy and rng is None:
    raise ValueError("decode.method 'sample' needs an rng")
  t_max = settings.max_length
  state = {
      "step": jnp.int32(0),
      "last": jnp.full((batch_size,), bos_id, jnp.int32),
      "seqs": jnp.full((batch_size, t_max), pad_id, jnp.int32),
      "logp": jnp.zeros((batch_size,), jnp.float32),
      "length": jnp.zeros((batch_size,), jnp.int32),
      "finished": jnp.zeros((batch_size,), bool),
      "cache": cache,
  }

  def keep_going(s):
    return (s["step"] < t_max) & ~jnp.all(s["finished"])

  def body(s):
    step = s["step"]
    logits, cache = step_fn(s["last"], step, s["cache"])
    log_probs = _constrained_log_probs(logits, s["seqs"], step, settings, eos_id, valid_vocab,
                                       word_starts)
    if greedy:
      token = jnp.argmax(log_probs, axis=-1).astype(jnp.int32)
    else:
      scaled = _filter_logits(log_probs / max(settings.temperature, 1e-6), settings.top_k,
                              settings.top_p)
      token = jax.random.categorical(jax.random.fold_in(rng, step), scaled).astype(jnp.int32)
    live = ~s["finished"]
    token = jnp.where(live, token, pad_id)
    chosen = jnp.take_along_axis(log_probs, jnp.maximum(token, 0)[:, None], axis=1)[:, 0]
    return {"step": step + 1, "last": token,
            "seqs": s["seqs"].at[:, step].set(token),
            "logp": s["logp"] + jnp.where(live, chosen, 0.0),
            "length": s["length"] + live.astype(jnp.int32),
            "finished": s["finished"] | (token == eos_id), "cache": cache}

  final = jax.lax.while_loop(keep_going, body, state)
  return {"sequences": final["seqs"], "scores": final["logp"], "lengths": final["length"]}


def decode(step_fn, cache, cache_axes, batch_size: int, settings: DecodeSettings, *, bos_id: int,
           eos_id: int, pad_id: int, rng=None, valid_vocab: int | None = None,
           word_starts=None):
  """Dispatches on settings.method. Beam search returns [batch, beams, ...] (best first);
  greedy and sampling return [batch, ...]. Token ids >= valid_vocab are never generated;
  word_starts [vocab] bool (the tokenizer's) makes trigram blocking compare words."""
  ids = dict(bos_id=bos_id, eos_id=eos_id, pad_id=pad_id, valid_vocab=valid_vocab,
             word_starts=word_starts)
  if settings.method == "beam":
    return beam_search(step_fn, cache, cache_axes, batch_size, settings, **ids)
  return sample(step_fn, cache, batch_size, settings, rng=rng, **ids)


def strip_sequence(tokens, eos_id: int, pad_id: int) -> list:
  """Host-side: the generated tokens before EOS / padding, as a list of ints."""
  out = []
  for t in list(map(int, tokens)):
    if t in (eos_id, pad_id):
      break
    out.append(t)
  return out
