"""scikit-learn estimators around jaxmem's probes, for features from any network.

Each class wraps the public fit/score functions of :mod:`jaxmem.probes.masc`, :mod:`jaxmem.probes.linear` and the
baselines (:mod:`.ncm`, :mod:`.knn`, :mod:`.lda`, :mod:`.qda`, :mod:`.logreg`, through
:mod:`jaxmem.probes.over_members`; methods in docs/methods.md) as a scikit-learn classifier: ``fit(X, y)`` on
``X [N, D]`` and any class labels ``y`` (integers, strings, …; ``classes_`` holds them sorted), then ``predict``,
``decision_function`` (one score per class; argmax = prediction), ``score`` (accuracy), ``get_params`` /
``set_params``. They work inside ``Pipeline``, ``cross_val_score`` and ``GridSearchCV``::

    GridSearchCV(MASCClassifier(), {"variance": [0.5, 0.9, 0.99]}).fit(X, y)

With two classes ``decision_function`` follows scikit-learn's convention: one value per sample,
score(classes_[1]) − score(classes_[0]), positive for ``classes_[1]``. Ties go to the first class of
``classes_``. The fitted probe is kept as host (numpy) arrays, so estimators pickle.

Each estimator passes ``sklearn.utils.estimator_checks.check_estimator`` except the checks named in its
``expected_failed_checks`` (see :func:`expected_failed_checks`), each with its reason.
"""
from __future__ import annotations

import jax
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from jaxmem.probes import lda, linear, logreg, masc, ncm, over_members, qda

# On the 2-feature blobs of scikit-learn's accuracy check every class subspace at variance 0.99 is the whole plane
# (k = D = 2), so every sample ties and goes to the first class: a subspace classifier needs D > classes' rank.
_SUBSPACE_ON_2D = ("check_classifiers_train: the check wants accuracy > 0.83 on 2-feature blobs, where every "
                   "class's uncentred subspace at variance 0.99 spans the whole plane, so all samples tie")


class _ProbeClassifier(ClassifierMixin, BaseEstimator):
    """Shared plumbing: label encoding, input validation; subclasses fit in ``_fit``."""

    _expected_failed_checks: dict[str, str] = {}

    def fit(self, X, y):
        """Fit on features ``X [N, D]`` and labels ``y [N]`` (any hashable class values)."""
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32))
        check_classification_targets(y)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        self._fit(X, encoded.astype(np.int32), len(self.classes_))
        return self

    def _checked(self, X) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=(np.float64, np.float32))

    def _fit(self, X, y, num_classes):
        raise NotImplementedError


class _ScoringClassifier(_ProbeClassifier):
    """A probe with per-class scores: ``decision_function`` and ``predict`` = argmax."""

    def decision_function(self, X) -> np.ndarray:
        """Scores ``[T, C]`` per class of ``classes_`` (``[T]`` for two classes, see the module docstring)."""
        scores = self._class_scores(self._checked(X))
        if len(self.classes_) == 2:
            with np.errstate(invalid="ignore"):  # -inf - -inf: neither class fitted, NaN > 0 is False
                return scores[:, 1] - scores[:, 0]
        return scores

    def predict(self, X) -> np.ndarray:
        """Predicted class values ``[T]`` (from ``classes_``)."""
        winners = np.argmax(self._class_scores(self._checked(X)), axis=1)
        return self.classes_[winners]

    def _class_scores(self, X) -> np.ndarray:
        raise NotImplementedError


def _host(probe):
    return jax.tree.map(np.asarray, probe)


class MASCClassifier(_ScoringClassifier):
    """MASC: one uncentred principal subspace per class, prediction by the smallest angle.

    ``decision_function`` gives cos²θ per class. Expected failures: check_classifiers_train (2-feature blobs, see
    :data:`_SUBSPACE_ON_2D`).

    Args:
      variance: fraction 0 < n < 1 of each class's uncentred variance to keep, or an integer number of components.
      precision: "fast" (float32) or "exact" (float64, reproduces the numpy reference).
    """

    _expected_failed_checks = {"check_classifiers_train": _SUBSPACE_ON_2D}

    def __init__(self, variance=0.99, precision="fast"):
        self.variance = variance
        self.precision = precision

    def _fit(self, X, y, num_classes):
        self.probe_ = _host(masc.fit(X, y, num_classes, self.variance, self.precision))
        self.n_components_ = np.asarray(self.probe_.num_components)

    def _class_scores(self, X):
        return np.asarray(masc.scores(self.probe_, X))


class LinearProbeClassifier(_ScoringClassifier):
    """The paper-2 linear probe: per class the leading uncentred eigenvector, prediction argmax_c v_cᵀh; no bias.

    Expected failures: check_classifiers_train (a bias-free direction per class cannot separate blobs on both
    sides of the origin along one direction).

    Args:
      precision: "fast" (float32) or "exact" (float64).
    """

    _expected_failed_checks = {"check_classifiers_train": "the check's 2-feature blobs are not separable by one "
                                                          "bias-free direction per class"}

    def __init__(self, precision="fast"):
        self.precision = precision

    def _fit(self, X, y, num_classes):
        self.probe_ = _host(linear.fit(X, y, num_classes, self.precision))

    def _class_scores(self, X):
        return np.asarray(linear.scores(self.probe_, X))


class NCMClassifier(_ScoringClassifier):
    """Nearest class mean by cosine similarity to the uncentred class means; ``decision_function`` = cosines."""

    def _fit(self, X, y, num_classes):
        self.probe_ = _host(over_members.fit(ncm.fit, X, y, num_classes))

    def _class_scores(self, X):
        return np.asarray(over_members.scores(ncm.scores, self.probe_, X))


class KNNProbeClassifier(_ProbeClassifier):
    """k nearest neighbours under cosine distance with uniform votes (ties → first class of ``classes_``).

    It has no ``decision_function`` (as scikit-learn's ``KNeighborsClassifier``): the probe returns votes' winners
    only.

    Args:
      n_neighbors: k, at most the number of training samples.
    """

    def __init__(self, n_neighbors=5):
        self.n_neighbors = n_neighbors

    def _fit(self, X, y, num_classes):
        if len(y) < self.n_neighbors:
            raise ValueError(f"n_samples = {len(y)} is fewer than n_neighbors = {self.n_neighbors}")
        self.train_features_, self.train_labels_ = X, y

    def predict(self, X) -> np.ndarray:
        """Predicted class values ``[T]`` (from ``classes_``)."""
        X = self._checked(X)
        votes = over_members.knn_predict(self.train_features_, self.train_labels_, X, len(self.classes_),
                                         self.n_neighbors)
        return self.classes_[np.asarray(votes)]


class LDAProbeClassifier(_ScoringClassifier):
    """Linear discriminant analysis as scikit-learn's defaults (svd solver); ``decision_function`` = log posterior
    up to a constant."""

    def _fit(self, X, y, num_classes):
        self.probe_ = _host(over_members.fit(lda.fit, X, y, num_classes))

    def _class_scores(self, X):
        return np.asarray(over_members.scores(lda.scores, self.probe_, X))


class QDAProbeClassifier(_ScoringClassifier):
    """Quadratic discriminant analysis as scikit-learn's defaults, but finite on rank-deficient classes
    (``rank_deficient_`` flags them; their scores are an artefact, see :mod:`jaxmem.probes.qda`)."""

    def _fit(self, X, y, num_classes):
        self.probe_ = _host(over_members.fit(qda.fit, X, y, num_classes))
        self.rank_deficient_ = np.asarray(self.probe_.rank_deficient)

    def _class_scores(self, X):
        return np.asarray(over_members.scores(qda.scores, self.probe_, X))


class LogisticProbeClassifier(_ScoringClassifier):
    """Multinomial logistic regression: one Dense(D→C) trained with Adam, no feature scaling.

    Expected failures: check_classifiers_train (underfits the check's small data at the defaults).

    Args:
      epochs, batch_size, learning_rate: the optimisation (defaults: 20 epochs of batch 128, lr 1e-3).
      random_state: integer seed of the initialisation and the batch order.
    """

    _expected_failed_checks = {"check_classifiers_train": "the default 20 epochs of Adam at lr 1e-3 take only 60 "
                                                          "steps on the check's 300 samples and underfit them"}

    def __init__(self, epochs=20, batch_size=128, learning_rate=1e-3, random_state=0):
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.random_state = random_state

    def _fit(self, X, y, num_classes):
        key = jax.random.key(0 if self.random_state is None else int(self.random_state))
        self.probe_ = _host(over_members.logreg_fit(X, y, num_classes, key, self.epochs, self.batch_size,
                                                    self.learning_rate))

    def _class_scores(self, X):
        return np.asarray(over_members.scores(logreg.scores, self.probe_, X))


ESTIMATORS = (MASCClassifier, LinearProbeClassifier, NCMClassifier, KNNProbeClassifier, LDAProbeClassifier,
              QDAProbeClassifier, LogisticProbeClassifier)


def expected_failed_checks(estimator) -> dict[str, str]:
    """The scikit-learn estimator checks ``estimator`` is known to fail, each with its reason."""
    return dict(estimator._expected_failed_checks)


__all__ = [cls.__name__ for cls in ESTIMATORS] + ["ESTIMATORS", "expected_failed_checks"]
