"""On-disk formats and the tools that write them: the shard format, converters from the files
users have, tfds builders and sources, tokenizers, image decoding, CMCL augmentation."""
