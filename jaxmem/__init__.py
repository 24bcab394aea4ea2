"""jaxmem: latent generalisation during memorisation, in JAX (Ketha & Ramaswamy, arXiv 2501.14687, 2603.19865)."""

__version__ = "0.1.0"
