"""Decoding: model-agnostic beam search, greedy and sampling (search.py) and the UNIMO adapter
that encodes the source into the key/value cache and decodes the target (generate.py)."""
