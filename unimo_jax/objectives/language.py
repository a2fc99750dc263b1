"""Language objectives: bidirectional MLM and seq2seq LM, on text or conditioned on an image.

Both read the LM logits the model computed at `batch['lm_positions']` and score them against
  lm_labels  [batch, P] int     the token to predict at each position;
  lm_weights [batch, P] float   1 for a real prediction, 0 for padding.
MLM positions are the masked tokens; seq2seq positions are the target inputs, each labelled with the
next target token. The loss is the mean over real predictions in the (global) batch.
"""

import jax
import jax.numpy as jnp


def weighted_token_cross_entropy(logits, labels, weights, label_smoothing: float = 0.0):
  """(loss, metrics) of softmax cross-entropy averaged over positions with weight 1.

  logits [batch, P, vocab]; labels [batch, P]; weights [batch, P].
  With label smoothing eps the target is (1 - eps) * onehot + eps / vocab.
  """
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
  per_token = nll
  if label_smoothing:
    per_token = (1.0 - label_smoothing) * nll - label_smoothing * logp.mean(axis=-1)
  weights = weights.astype(jnp.float32)
  count = weights.sum()
  denom = jnp.maximum(count, 1.0)
  loss = (per_token * weights).sum() / denom
  correct = (jnp.argmax(logp, axis=-1) == labels).astype(jnp.float32)
  metrics = {
      "loss": loss,
      "nll": (nll * weights).sum() / denom,
      "accuracy": (correct * weights).sum() / denom,
      "tokens": count,
  }
  return loss, metrics


def mlm_loss(outputs, batch):
  """Masked LM: cross-entropy over the masked positions only."""
  return weighted_token_cross_entropy(outputs["lm_logits"], batch["lm_labels"], batch["lm_weights"])


def seq2seq_loss(outputs, batch, label_smoothing: float = 0.0):
  """Seq2seq LM (text source -> target, or image -> caption), optionally label-smoothed."""
  return weighted_token_cross_entropy(outputs["lm_logits"], batch["lm_labels"], batch["lm_weights"],
                                      label_smoothing)
