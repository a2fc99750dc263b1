"""Shared by the generation tasks (captioning, text seq2seq): the label-smoothed seq2seq loss on
the LM head, and batched decoding of sources into strings."""

import jax
import numpy as np

from unimo_jax.decoding.generate import generate
from unimo_jax.decoding.search import DecodeSettings, strip_sequence
from unimo_jax.objectives.language import seq2seq_loss
from unimo_jax.tasks import villa
from unimo_jax.tasks.base import Task


class GenerationTask(Task):

  def _lm_loss(self, params, inputs, rng):
    """(label-smoothed seq2seq loss, its metrics, the LM logits) of one forward."""
    outputs, _ = self.forward(params, inputs, rng, heads=frozenset({"lm"}))
    loss, metrics = seq2seq_loss(outputs, inputs, self.config.task.label_smoothing)
    return loss, metrics, outputs["lm_logits"]

  def branch(self, params, inputs, rng):
    """(label-smoothed seq2seq loss, LM logits [rows, vocab], weights [rows]) of one forward."""
    loss, _, logits = self._lm_loss(params, inputs, rng)
    return loss, logits.reshape(-1, logits.shape[-1]), inputs["lm_weights"].reshape(-1)

  def loss(self, params, batch, rng):
    if villa.enabled(self.config.task):  # the caption block only, as the original
      loss, metrics = villa.task_villa_loss(self, params, batch["inputs"], rng, target_only=True)
      return loss, {"total_loss": loss, **metrics}
    loss, metrics, _ = self._lm_loss(params, batch["inputs"], rng)
    return loss, {"total_loss": loss, "token_accuracy": metrics["accuracy"]}

  @property
  def end_id(self) -> int:
    """The token that ends a target: [SEP] (captions); text seq2seq ends with [MASK]."""
    return self.special["sep"]

  def word_starts(self):
    """[model vocab] bool for word-level trigram blocking (None when blocking is off)."""
    if not self.config.decode.trigram_blocking:
      return None
    starts = np.zeros(int(self.config.model.vocab_size), bool)
    table = self.tokenizer.word_starts()[:len(starts)]
    starts[:len(table)] = table
    return starts

  def decode_settings(self) -> DecodeSettings:
    return DecodeSettings.from_config(self.config.decode)

  def eval_fn(self, rng=None):
    """(params, sources) -> the decode loop's output (config.decode), over the KV cache."""
    settings, s, seed = self.decode_settings(), self.special, self.config.seed
    word_starts = self.word_starts()

    def fn(p, b):  # the default key is made inside: no array exists outside the trace
      key = rng if rng is not None else jax.random.key(seed)
      return generate(self.model, p["backbone"], b, settings, bos_id=s["cls"],
                      eos_id=self.end_id, pad_id=s["pad"], rng=key,
                      valid_vocab=self.tokenizer.vocab_size, word_starts=word_starts)
    return fn

  def eval_programs(self) -> dict:
    return {"decode": (self.eval_fn(), self.eval_row(self.placeholder_record()))}

  def generate_texts(self, params, sources, rng=None) -> list:
    """Decoded target text for every source (a dict of model fields per row), best beam."""
    s = self.special
    out = self.batched(jax.jit(self.eval_fn(rng)), params, sources)
    sequences = out["sequences"]
    if sequences.ndim == 3:  # beams: the best is first
      sequences = sequences[:, 0]
    return [self.tokenizer.decode(strip_sequence(seq, self.end_id, s["pad"])) for seq in sequences]
