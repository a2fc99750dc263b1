"""The UNIMO transformer, its embeddings, masks and heads."""

from unimo_jax.model.presets import PRESETS, model_config
from unimo_jax.model.unimo import ALL_HEADS, Unimo

__all__ = ["ALL_HEADS", "PRESETS", "Unimo", "model_config"]

from unimo_jax.model.params import (abstract_params, count_params, init_params, stack_layers,
                                    unstack_layers)

__all__ += ["abstract_params", "count_params", "init_params", "stack_layers", "unstack_layers"]
