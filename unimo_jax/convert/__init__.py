"""Weight converters: HF RoBERTa -> unimo_jax parameters (`python -m unimo_jax.convert`)."""
