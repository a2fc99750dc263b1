"""Generated data: the synthetic scenes (the embedded default), the fine-tuning tasks' synthetic
versions, and random or placeholder batches for checks and compiles."""
