"""Probes fitted on layer activations: MASC and (later) the baselines of SPEC §5, sharing the Gram machinery."""
