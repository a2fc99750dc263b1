"""Cross-modal contrastive learning (CMCL) over the global batch.

Inputs (`emb`, a dict, leading dimension = global batch B):
  image [B, D], text [B, D]                L2-normalised h[IMG] / h[CLS] embeddings of the pair's
                                           image alone and caption alone;
  extra_text [B, Et, D] (optional)         per-pair extra texts: paraphrases and retrieved texts
  extra_text_positive [B, Et] bool         (positives) or rewritten captions (hard negatives);
  extra_text_valid [B, Et] bool            False for absent extras;
  extra_image [B, Ei, D] (optional)        per-pair retrieved images (positives);
  extra_image_valid [B, Ei] bool.
Image->text: row i scores image i against every text of the global batch plus its own extra texts.
Text->image: row i scores text i against every image plus its own extra images. A row's loss
over its positives P, by `positive_form`:
  'mean_log' (1/|P|) sum_{p in P} -log(exp(s_p/t) / sum_all exp(s/t))   every positive must win
  'log_sum'  -log(sum_{p in P} exp(s_p/t) / sum_all exp(s/t))           the paper's formula
(with only the paired caption both are plain InfoNCE); the loss is the mean over rows of the two
directions' average.

`cmcl_loss` is written over the global batch and constrains the logits to P(batch_axes, None) so a
device holds its rows x all columns. `cmcl_loss_chunked` is a jax.shard_map version that all-gathers
the columns and sweeps them in chunks with an online log-sum-exp, so a device never holds more than
[local_batch, chunk] logits.
"""

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from unimo_jax.model.layers import MASK_BIAS
from unimo_jax.parallel import BATCH_AXES


def _masked(logits, keep):
  return jnp.where(keep, logits, MASK_BIAS)


def _extra_logits(anchor, extra, temperature):
  # anchor [b, D], extra [b, E, D] -> [b, E]
  return jnp.einsum("bd,bed->be", anchor, extra) / temperature


POSITIVE_FORMS = ("mean_log", "log_sum")


def _check_form(positive_form):
  if positive_form not in POSITIVE_FORMS:
    raise ValueError(f"objectives.cmcl_positive_form: expected one of {POSITIVE_FORMS}, found "
                     f"{positive_form!r}")


def _row_statistics(emb, temperature, i2t_base, t2i_base, row_index, positive_form="mean_log"):
  """Per-row sums of every CMCL statistic; i2t_base / t2i_base = (logsumexp, argmax) over columns.

  'mean_log' averages -log softmax over a row's positives (each positive must win against every
  column on its own), so a text that is close to every image cannot satisfy all rows at once the
  way it can under 'log_sum', -log(sum of positives / sum of all).
  """
  img, txt = emb["image"], emb["text"]
  positive = jnp.sum(img * txt, axis=-1) / temperature  # [b]
  stats = {}
  for direction, (base_lse, base_argmax), extra_key in (
      ("i2t", i2t_base, "extra_text"), ("t2i", t2i_base, "extra_image")):
    all_lse, positive_sum, positive_count = base_lse, positive, jnp.ones_like(positive)
    positive_lse = positive
    if emb.get(extra_key) is not None:
      anchor = img if direction == "i2t" else txt
      extra = _extra_logits(anchor, emb[extra_key], temperature)  # [b, E]
      valid = emb[f"{extra_key}_valid"].astype(bool)
      is_pos = (emb[f"{extra_key}_positive"].astype(bool) if direction == "i2t"
                else jnp.ones_like(valid))
      all_lse = jnp.logaddexp(all_lse, jax.nn.logsumexp(_masked(extra, valid), axis=-1))
      take = (valid & is_pos).astype(extra.dtype)
      positive_sum = positive_sum + jnp.sum(jnp.where(take > 0, extra, 0.0), axis=-1)
      positive_count = positive_count + take.sum(-1)
      positive_lse = jnp.logaddexp(positive, jax.nn.logsumexp(_masked(extra, take > 0), axis=-1))
      if direction == "i2t":
        hard = valid & ~is_pos
        wins = (positive[:, None] > extra) & hard
        stats["hard_negative_wins"] = wins.sum().astype(jnp.float32)
        stats["hard_negatives"] = hard.sum().astype(jnp.float32)
    if positive_form == "log_sum":
      stats[f"{direction}_loss"] = jnp.sum(all_lse - positive_lse)
    else:
      stats[f"{direction}_loss"] = jnp.sum(all_lse - positive_sum / positive_count)
    stats[f"{direction}_accuracy"] = jnp.sum(base_argmax == row_index).astype(jnp.float32)
  stats["positive_logit"] = jnp.sum(positive)
  return stats


def _finalize(stats, global_batch, temperature):
  n = jnp.float32(global_batch)
  metrics = {
      "i2t_loss": stats["i2t_loss"] / n,
      "t2i_loss": stats["t2i_loss"] / n,
      "i2t_accuracy": stats["i2t_accuracy"] / n,
      "t2i_accuracy": stats["t2i_accuracy"] / n,
      "positive_logit": stats["positive_logit"] / n,
      "temperature": temperature,
  }
  if "hard_negatives" in stats:
    metrics["hard_negative_accuracy"] = stats["hard_negative_wins"] / jnp.maximum(
        stats["hard_negatives"], 1.0)
  metrics["loss"] = 0.5 * (metrics["i2t_loss"] + metrics["t2i_loss"])
  return metrics["loss"], metrics


def _check(emb):
  for key in ("image", "text"):
    if key not in emb:
      raise ValueError(f"cmcl: expected embeddings 'image' and 'text', missing {key!r}")
  if emb["image"].shape != emb["text"].shape or emb["image"].ndim != 2:
    raise ValueError(f"cmcl: expected 'image' and 'text' of one shape [batch, dim], found "
                     f"{emb['image'].shape} and {emb['text'].shape}")
  b, d = emb["image"].shape
  for key in ("extra_text", "extra_image"):
    if emb.get(key) is None:
      continue
    wanted = [f"{key}_valid"] + (["extra_text_positive"] if key == "extra_text" else [])
    for name in wanted:
      if name not in emb:
        raise ValueError(f"cmcl: {key!r} needs {name!r}")
    if emb[key].ndim != 3 or emb[key].shape[0] != b or emb[key].shape[2] != d:
      raise ValueError(f"cmcl: expected {key!r} of shape [{b}, extras, {d}], found {emb[key].shape}")


def cmcl_loss(emb, temperature, *, mesh=None, batch_axes=BATCH_AXES, positive_form="mean_log"):
  """(loss, metrics) over the global batch; with a mesh the logits are [local rows, all columns]."""
  _check(emb)
  _check_form(positive_form)
  img, txt = emb["image"].astype(jnp.float32), emb["text"].astype(jnp.float32)
  emb = dict(emb, image=img, text=txt)

  def row_sharded(x):
    if mesh is None:
      return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(batch_axes, None)))

  i2t = row_sharded(img @ txt.T / temperature)  # [B, B]: image rows x text columns
  t2i = row_sharded(txt @ img.T / temperature)  # [B, B]: text rows x image columns

  def lse_argmax(logits):
    return jax.nn.logsumexp(logits, axis=-1), jnp.argmax(jax.lax.stop_gradient(logits), axis=-1)

  global_batch = img.shape[0]
  stats = _row_statistics(emb, temperature, lse_argmax(i2t), lse_argmax(t2i),
                          jnp.arange(global_batch), positive_form)
  return _finalize(stats, global_batch, temperature)


def _chunked_lse_argmax(rows, columns, temperature, chunk_size):
  """Online logsumexp and argmax of rows @ columns.T / t, `chunk_size` columns at a time.

  rows [b, D], columns [B, D] -> ([b], [b]). The chunk body is rematerialised in the backward pass,
  so only [b, chunk] logits are ever live.
  """
  total, dim = columns.shape
  chunks = columns.reshape(total // chunk_size, chunk_size, dim)

  @jax.checkpoint
  def body(carry, inputs):
    lse, best, best_index = carry
    start, chunk = inputs
    logits = rows @ chunk.T / temperature  # [b, chunk]
    lse = jnp.logaddexp(lse, jax.nn.logsumexp(logits, axis=-1))
    frozen = jax.lax.stop_gradient(logits)
    chunk_best = frozen.max(axis=-1)
    better = chunk_best > best
    best_index = jnp.where(better, start + jnp.argmax(frozen, axis=-1), best_index)
    return (lse, jnp.maximum(best, chunk_best), best_index), None

  # Derived from `rows` so the carry has the rows' sharding type inside shard_map.
  zero = jnp.zeros_like(rows[:, 0], dtype=jnp.float32)  # [b]
  init = (zero + MASK_BIAS, zero - jnp.inf, zero.astype(jnp.int32))
  starts = jnp.arange(0, total, chunk_size, dtype=jnp.int32)
  (lse, _, best_index), _ = jax.lax.scan(body, init, (starts, chunks))
  return lse, best_index


def cmcl_loss_chunked(emb, temperature, *, mesh, batch_axes=BATCH_AXES, chunk_size=None,
                      positive_form="mean_log"):
  """The same loss as `cmcl_loss`, as a jax.shard_map over `batch_axes` with chunked columns.

  chunk_size: columns per chunk (default: the local batch); must divide the global batch.
  """
  _check(emb)
  global_batch = emb["image"].shape[0]
  devices = 1
  for axis in batch_axes:
    devices *= mesh.shape[axis]
  if global_batch % devices:
    raise ValueError(f"cmcl: global batch {global_batch} is not divisible by the {devices} "
                     f"devices of mesh axes {batch_axes}")
  emb = {k: v for k, v in emb.items() if v is not None}

  def local(emb, temperature):
    return cmcl_loss_local(emb, temperature, batch_axes=batch_axes, chunk_size=chunk_size,
                           positive_form=positive_form)

  fn = jax.shard_map(local, mesh=mesh, in_specs=(P(batch_axes), P()), out_specs=P())
  return fn(emb, temperature)


def cmcl_loss_local(emb, temperature, *, batch_axes=BATCH_AXES, chunk_size=None,
                    positive_form="mean_log"):
  """The per-device body of `cmcl_loss_chunked`, for code already inside a jax.shard_map over
  `batch_axes`: `emb` holds this device's rows; the columns are all-gathered over the axes and
  the row statistics summed over them, so (loss, metrics) are the global batch's, the same on
  every device. chunk_size: columns per chunk (default: the local batch)."""
  _check(emb)
  _check_form(positive_form)
  emb = {k: v for k, v in emb.items() if v is not None}
  b = emb["image"].shape[0]
  global_batch = b * jax.lax.axis_size(batch_axes)
  chunk_size = chunk_size or b
  if global_batch % chunk_size:
    raise ValueError(f"cmcl: chunk_size {chunk_size} must divide the global batch {global_batch}")
  img = emb["image"].astype(jnp.float32)  # [b, D]
  txt = emb["text"].astype(jnp.float32)
  emb = dict(emb, image=img, text=txt)
  all_txt = jax.lax.all_gather(txt, batch_axes, axis=0, tiled=True)  # [B, D]
  all_img = jax.lax.all_gather(img, batch_axes, axis=0, tiled=True)
  row_index = jax.lax.axis_index(batch_axes) * b + jnp.arange(b)
  stats = _row_statistics(
      emb, temperature, _chunked_lse_argmax(img, all_txt, temperature, chunk_size),
      _chunked_lse_argmax(txt, all_img, temperature, chunk_size), row_index, positive_form)
  stats = jax.lax.psum(stats, batch_axes)
  # The same value on every device; a temperature computed from each device's own copy of the
  # parameters (train/data_parallel.py) is typed as varying, and the metric must not be.
  return _finalize(stats, global_batch, jax.lax.pmean(temperature, batch_axes))
