"""Public MASC API (``jaxmem.masc.fit`` / ``predict``); the implementation lives in :mod:`jaxmem.probes.masc`."""
from jaxmem.probes.gram import GramState, chunk_schedule, gram_init, gram_update
from jaxmem.probes.masc import (
    MascProbe,
    angles,
    check_variance,
    fit,
    fit_flops,
    fit_from_gram,
    mean_components,
    predict,
    projectors,
    quadratic_scores,
    scores,
    scoring_flops,
)

__all__ = [
    "GramState",
    "MascProbe",
    "angles",
    "check_variance",
    "chunk_schedule",
    "fit",
    "fit_flops",
    "fit_from_gram",
    "gram_init",
    "gram_update",
    "mean_components",
    "predict",
    "projectors",
    "quadratic_scores",
    "scores",
    "scoring_flops",
]
