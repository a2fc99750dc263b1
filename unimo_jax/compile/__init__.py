"""Ahead-of-time compilation for TPU slices on any machine (--mode=compile)."""
