"""Masked region prediction (MRM), for images alone and conditioned on text.

Reads from the model outputs region_feature_pred [batch, regions, feature_dim] and
region_class_logits [batch, regions, classes] (real regions; the [IMG] slot is not predicted), and
from the batch
  mrm_mask               [batch, regions]               1 for a masked region;
  region_target_features [batch, regions, feature_dim]  the original (unmasked) features;
  region_soft_labels     [batch, regions, classes]      the detector's class distribution.
"""

import jax
import jax.numpy as jnp


def mrm_loss(outputs, batch, regression_weight: float = 1.0, classification_weight: float = 1.0):
  """(loss, metrics): feature regression + KL to the detector's soft labels, on masked regions.

  Regression: squared error averaged over feature dimensions, then over masked regions.
  Classification: KL(soft_labels || softmax(logits)) averaged over masked regions.
  """
  for pred, label in (("region_feature_pred", "region_target_features"),
                      ("region_class_logits", "region_soft_labels")):
    if outputs[pred].shape != batch[label].shape:
      raise ValueError(f"batch[{label!r}]: expected shape {list(outputs[pred].shape)} (as the "
                       f"model's {pred}), found {list(batch[label].shape)}")
  mask = batch["mrm_mask"].astype(jnp.float32)  # [batch, regions]
  count = mask.sum()
  denom = jnp.maximum(count, 1.0)
  pred = outputs["region_feature_pred"].astype(jnp.float32)
  target = batch["region_target_features"].astype(jnp.float32)
  squared_error = jnp.mean((pred - target) ** 2, axis=-1)  # [batch, regions]
  regression = (squared_error * mask).sum() / denom
  logq = jax.nn.log_softmax(outputs["region_class_logits"].astype(jnp.float32), axis=-1)
  p = batch["region_soft_labels"].astype(jnp.float32)
  kl = jnp.sum(jax.scipy.special.xlogy(p, p) - p * logq, axis=-1)  # [batch, regions]
  classification = (kl * mask).sum() / denom
  correct = (jnp.argmax(logq, -1) == jnp.argmax(p, -1)).astype(jnp.float32)
  loss = regression_weight * regression + classification_weight * classification
  metrics = {
      "loss": loss,
      "feature_mse": regression,
      "class_kl": classification,
      "class_accuracy": (correct * mask).sum() / denom,
      "regions": count,
  }
  return loss, metrics
