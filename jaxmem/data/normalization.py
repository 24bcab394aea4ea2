"""Model inputs from pixels: the papers' normalisation of each dataset."""
from __future__ import annotations

import numpy as np

from jaxmem.data.loading import dataset_info

# Datasets normalised with x = pixel/255 only; all others use (x - 0.5) / 0.5.
_UNCENTRED = frozenset({"tiny_imagenet"})


def normalize(name: str, x) -> np.ndarray:
    """``uint8`` pixels ``[..., H, W, C]`` -> float32 model inputs.

    ``x/255`` then ``(x - 0.5) / 0.5`` (range [-1, 1]) for every dataset except ``tiny_imagenet``, which is
    ``x/255`` only (range [0, 1]).
    """
    dataset_info(name)
    x = np.asarray(x).astype(np.float32) / np.float32(255)
    if name in _UNCENTRED:
        return x
    return (x - np.float32(0.5)) / np.float32(0.5)
