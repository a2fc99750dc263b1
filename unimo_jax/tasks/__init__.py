"""Fine-tuning tasks: one file per task (head, loss, reader, metrics), run by runner.py."""
