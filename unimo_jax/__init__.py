"""UNIMO in JAX/Flax: one transformer for text, images and image-text pairs."""

__version__ = "0.1.0"
