"""Fine-tuning tasks, one file each (head, loss, reader, synthetic version, metrics), each an
Experiment (train/experiment.py) run by the one driver (train/driver.py)."""
