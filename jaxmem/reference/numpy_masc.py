"""Plain numpy MASC, written step by step like the original method.

An oracle for tests and the baseline of ``benchmarks/probe_bench.py``: deliberately unoptimised. Per class it stacks
the activations with their negatives, takes ``np.cov`` of that (zero-mean) stack, ``eigh``, sorts the spectrum
descending, applies the k rule, then projects samples onto each subspace in batches of 100 and measures the angle
between each sample and its projection, in degrees. Prediction is the minimum angle.
"""
from __future__ import annotations

import numpy as np


def fit(features: np.ndarray, labels: np.ndarray, num_classes: int, variance: float = 0.99) -> list[np.ndarray]:
    """One basis [D, k_c] per class (float64)."""
    subspaces = []
    for c in range(num_classes):
        class_features = np.asarray(features[labels == c], np.float64)
        augmented = np.concatenate([class_features, -class_features], axis=0)
        covariance = np.cov(augmented, rowvar=False)
        covariance = np.atleast_2d(covariance)
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]
        if variance >= 1:
            k = int(variance)
        else:
            ratios = np.cumsum(eigenvalues) / np.sum(eigenvalues)
            k = int(np.sum(ratios <= variance)) + 1
        subspaces.append(eigenvectors[:, :k])
    return subspaces


def angles(subspaces: list[np.ndarray], features: np.ndarray, batch_size: int = 100) -> np.ndarray:
    """Angle in degrees between every sample and every class subspace: [T, C]."""
    result = np.empty((len(features), len(subspaces)))
    for start in range(0, len(features), batch_size):
        batch = np.asarray(features[start : start + batch_size], np.float64)
        for c, basis in enumerate(subspaces):
            projection = (batch @ basis) @ basis.T
            with np.errstate(invalid="ignore", divide="ignore"):
                cosine = np.sum(batch * projection, axis=1) / (
                    np.linalg.norm(batch, axis=1) * np.linalg.norm(projection, axis=1)
                )
            result[start : start + batch_size, c] = np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))
    return result


def predict(subspaces: list[np.ndarray], features: np.ndarray, batch_size: int = 100) -> np.ndarray:
    """Class of minimum angle per sample (NaN angles, from an all-zero sample, give class 0 as in numpy)."""
    return np.argmin(angles(subspaces, features, batch_size), axis=1)


def num_components(subspaces: list[np.ndarray]) -> np.ndarray:
    """k per class."""
    return np.array([basis.shape[1] for basis in subspaces])
