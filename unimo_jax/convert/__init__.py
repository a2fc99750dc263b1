"""Weight converters: HF RoBERTa -> unimo_jax parameters."""
