"""Experiments: each turns specs into rows of the tidy results table (SPEC §8), nothing else."""
