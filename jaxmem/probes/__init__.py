"""Probes fitted on layer activations, all with a leading member axis and one protocol (:mod:`.base`): MASC
(:mod:`.masc`), the paper-2 linear probe (:mod:`.linear`) and the baselines, one module each written for one member
(:mod:`.ncm`, :mod:`.knn`, :mod:`.lda`, :mod:`.qda`, :mod:`.logreg`; shared class moments in :mod:`.moments`) with
the member axis added by :mod:`.over_members`, sharing the Gram machinery of :mod:`.gram`; every probe by name in
:mod:`.registry`."""
