"""The scikit-learn estimators of jaxmem.probes.sklearn: the estimator checks, composition, and oracles."""
import numpy as np
import pytest
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer
from sklearn.utils.estimator_checks import parametrize_with_checks

from jaxmem.probes import masc
from jaxmem.probes.sklearn import (
    ESTIMATORS,
    KNNProbeClassifier,
    LDAProbeClassifier,
    MASCClassifier,
    expected_failed_checks,
)
from jaxmem.reference.numpy_masc import fit as numpy_fit, predict as numpy_predict


@parametrize_with_checks([cls() for cls in ESTIMATORS], expected_failed_checks=expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _digits(n=240):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x[:n].astype(np.float64), y[:n]


def test_string_labels_round_trip_through_classes():
    x, y = _digits()
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    fitted = MASCClassifier().fit(x, names[y])
    assert list(fitted.classes_) == sorted(names)
    by_index = MASCClassifier().fit(x, y)
    np.testing.assert_array_equal(fitted.predict(x), names[by_index.predict(x)])


def test_masc_decision_function_is_cos2_of_the_probe_in_class_order():
    x, y = _digits()
    labels = np.array([7, 3, 9])[y % 3]  # classes_ = [3, 7, 9]: sorted, not first-seen order
    estimator = MASCClassifier(variance=0.9).fit(x, labels)
    encoded = np.searchsorted([3, 7, 9], labels).astype(np.int32)
    probe = masc.fit(x, encoded, 3, 0.9)
    np.testing.assert_allclose(estimator.decision_function(x), np.asarray(masc.scores(probe, x)), rtol=1e-6)


def test_masc_exact_mode_matches_the_numpy_reference():
    x, y = _digits()
    estimator = MASCClassifier(variance=0.95, precision="exact").fit(x, y)
    reference = numpy_fit(x, y, 10, 0.95)
    np.testing.assert_array_equal(estimator.predict(x), numpy_predict(reference, x))


def test_lda_and_knn_agree_with_scikit_learn():
    x, y = _digits()
    np.testing.assert_array_equal(LDAProbeClassifier().fit(x, y).predict(x),
                                  LinearDiscriminantAnalysis().fit(x, y).predict(x))
    oracle = KNeighborsClassifier(5, metric="cosine", algorithm="brute").fit(x[:160], y[:160])
    np.testing.assert_array_equal(KNNProbeClassifier().fit(x[:160], y[:160]).predict(x[160:]),
                                  oracle.predict(x[160:]))


def test_pipeline_cross_val_and_grid_search_over_variance():
    x, y = _digits()
    pipeline = make_pipeline(Normalizer(), MASCClassifier())
    scores = cross_val_score(pipeline, x, y, cv=3)
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))
    search = GridSearchCV(MASCClassifier(), {"variance": [0.3, 0.9, 2]}, cv=3).fit(x, y)
    manual = {v: cross_val_score(MASCClassifier(variance=v), x, y, cv=3).mean() for v in (0.3, 0.9, 2)}
    assert search.best_params_["variance"] == max(manual, key=manual.get)
    np.testing.assert_allclose(search.cv_results_["mean_test_score"], list(manual.values()))


@pytest.mark.parametrize("variance", [0, 1.5, "all"])
def test_bad_variance_is_one_clear_error(variance):
    x, y = _digits(60)
    with pytest.raises(ValueError, match="variance must be"):
        MASCClassifier(variance=variance).fit(x, y)
