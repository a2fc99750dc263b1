"""Data: shard format, tokenizers, masking, CMCL augmentation, grain pipelines, converters,
synthetic scenes."""
