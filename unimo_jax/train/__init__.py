"""Training: optimizer, train state, the jitted step, checkpoints, metrics, evaluation, the loop."""
