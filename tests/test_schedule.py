"""Learning-rate schedules and epoch-based fine-tuning lengths against UNIMO's rules written out:
max_train_steps = epoch * examples // batch, warmup = int(max_train_steps * proportion),
linear_warmup_decay, and scale_by_epoch_decay (lr * scale^i after each boundary)."""

import ml_collections
import numpy as np
import pytest

from train_helpers import set_fields
from unimo_jax.train.config_parts import optimizer_config, resolve_epochs
from unimo_jax.train.optimizer import learning_rate_schedule


def config(**fields):
  c = ml_collections.ConfigDict({"steps": 100, "batch_size": 32, "epochs": 0.0,
                                 "optimizer": optimizer_config(1e-4, 10)})
  return set_fields(c, fields)


def test_epochs_resolve_to_the_original_step_counts():
  c = config(epochs=20.0, **{"optimizer.warmup_proportion": 0.06})
  changed = resolve_epochs(c, 287_113)  # CNN/DM's training set at batch 8 x 4 GPUs
  assert c.steps == 20 * 287_113 // 32 == 179_445
  assert c.optimizer.warmup_steps == int(179_445 * 0.06) == 10_766
  assert changed == {"steps": 179_445, "optimizer.warmup_steps": 10_766}
  c = config(epochs=40.0, **{"optimizer.schedule": "piecewise", "optimizer.decay_epochs": (24, 32)})
  resolve_epochs(c, 145_000)  # Flickr30k captions at 4 x 8 GPUs
  per_epoch = 145_000 / 32
  assert c.optimizer.decay_boundaries == (int(24 * per_epoch), int(32 * per_epoch))
  untouched = config()
  assert resolve_epochs(untouched, 1000) == {} and untouched.steps == 100


def test_linear_warmup_decay_by_hand():
  c = config()
  lr = learning_rate_schedule(c)
  for step, expected in ((0, 0.0), (5, 5e-5), (10, 1e-4), (55, 5e-5), (100, 0.0)):
    np.testing.assert_allclose(float(lr(step)), expected, rtol=1e-5, atol=1e-12)


def test_piecewise_drops_by_hand():
  c = config(**{"optimizer.schedule": "piecewise", "optimizer.decay_boundaries": (30, 60),
                "optimizer.learning_rate": 5e-6})
  lr = learning_rate_schedule(c)
  for step, expected in ((0, 5e-6), (29, 5e-6), (31, 5e-7), (59, 5e-7), (61, 5e-8)):
    np.testing.assert_allclose(float(lr(step)), expected, rtol=1e-5)
  with pytest.raises(ValueError, match="optimizer.schedule"):
    learning_rate_schedule(config(**{"optimizer.schedule": "cosine"}))
