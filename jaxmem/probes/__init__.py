"""Probes fitted on layer activations, all with a leading member axis: MASC (:mod:`.masc`, sharing the Gram
machinery of :mod:`.gram`), the paper-2 linear probe (:mod:`.linear`) and the SPEC §5 baselines (:mod:`.baselines`)."""
