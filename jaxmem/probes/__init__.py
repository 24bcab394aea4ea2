"""Probes fitted on layer activations, all with a leading member axis and one protocol (:mod:`.base`): MASC
(:mod:`.masc`), the paper-2 linear probe (:mod:`.linear`) and the baselines (:mod:`.baselines`), sharing the Gram
machinery of :mod:`.gram`; every probe by name in :mod:`.registry`."""
