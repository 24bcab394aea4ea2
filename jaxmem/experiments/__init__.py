"""Experiments: each turns specs into rows of the tidy results table, nothing else."""
