"""Pretraining objectives, each a pure function returning (loss, metrics)."""

from unimo_jax.objectives.cmcl import cmcl_loss, cmcl_loss_chunked, cmcl_loss_local
from unimo_jax.objectives.global_batch import global_means
from unimo_jax.objectives.language import mlm_loss, seq2seq_loss, weighted_token_cross_entropy
from unimo_jax.objectives.regions import mrm_loss
from unimo_jax.objectives.total import weighted_total

__all__ = ["cmcl_loss", "cmcl_loss_chunked", "cmcl_loss_local", "global_means", "mlm_loss",
           "mrm_loss", "seq2seq_loss", "weighted_token_cross_entropy", "weighted_total"]
