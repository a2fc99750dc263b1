"""The streaming input pipeline: grain streams over shards, per-example transforms (masking,
span sampling, padding, CMCL extras), model inputs from records, host-side batching."""
