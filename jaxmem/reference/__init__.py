"""Independent reference implementations used as oracles (numpy MASC; Keras MLP and PyTorch CNN, imported lazily)."""
