"""Independent reference implementations used as oracles (numpy MASC; Keras MLP and PyTorch CNN, imported lazily)
and the cross-checks of jaxmem against them that ``jaxmem verify`` runs (:mod:`.verify`)."""
