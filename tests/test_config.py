"""The specs sit below every other module, and the report layer loads no training stack."""
import json
import subprocess
import sys

import pytest

from jaxmem.config import BN_MODES, PRECISIONS, PROBE_NAMES, ProbeSpec, required_correct

TRAINING_STACK = ("flax", "optax", "orbax")


def _modules_after(code: str) -> list[str]:
    """The names in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def _loaded(modules: list[str], package: str) -> list[str]:
    return [name for name in modules if name == package or name.startswith(package + ".")]


def test_config_imports_no_other_jaxmem_module_even_when_validating():
    modules = _modules_after("from jaxmem.config import ProbeSpec, TrainSpec\n"
                             "ProbeSpec(probes=('lda', 'masc(n=2)'), sensitivity=(0.5,), precision='exact', "
                             "bn_mode='reference', subspace_labels=('corrupted@0.4',))\n"
                             "TrainSpec('sgd', 1e-3, 32, 1.0)")
    assert _loaded(modules, "jaxmem") == ["jaxmem", "jaxmem.config"]
    assert not [name for package in (*TRAINING_STACK, "jax") for name in _loaded(modules, package)]


@pytest.mark.parametrize("module", ["jaxmem.report", "jaxmem.report.tables", "jaxmem.report.plots",
                                    "jaxmem.report.comparison", "jaxmem.report.pages", "jaxmem.report.text"])
def test_report_loads_no_training_stack(module):
    modules = _modules_after(f"import {module}")
    assert module in modules
    assert not [name for package in (*TRAINING_STACK, "jax") for name in _loaded(modules, package)]
    assert not [name for package in ("jaxmem.models", "jaxmem.probes", "jaxmem.train")
                for name in _loaded(modules, package)]


def test_models_import_before_config():
    # the old circle: config -> models.resnet -> models.init -> config
    modules = _modules_after("import jaxmem.models.init\nimport jaxmem.models\n"
                             "from jaxmem.config import ProbeSpec\nProbeSpec(bn_mode='reference')")
    assert "jaxmem.models.resnet" in modules


def test_names_in_config_are_the_registered_ones():
    from jaxmem.models.resnet import with_bn_mode
    from jaxmem.probes.registry import PROBES, select_probes

    assert tuple(PROBES) == PROBE_NAMES
    assert list(select_probes(PROBE_NAMES, precision=PRECISIONS[-1])) == list(PROBE_NAMES)
    for mode in BN_MODES:
        with_bn_mode(None, mode)


@pytest.mark.parametrize("fields, message", [
    ({"probes": ("svm", "masc(n=2.5)")}, r"unknown probes \['svm', 'masc\(n=2.5\)'\]; choose from masc, linear, ncm"),
    ({"variance": 1.5}, "variance must be a fraction in"),
    ({"sensitivity": (0,)}, "variance must be a fraction in"),
    ({"precision": "half"}, r"precision must be one of \('fast', 'exact'\), got 'half'"),
    ({"bn_mode": "train"}, r"bn_mode must be one of \('eval', 'reference'\), got 'train'"),
    ({"subspace_labels": ("shuffled",)}, "unknown subspace labels 'shuffled'"),
])
def test_probe_spec_names_the_bad_value(fields, message):
    with pytest.raises(ValueError, match=message):
        ProbeSpec(**fields)


def test_probe_spec_puts_masc_first_and_normalises_variances():
    spec = ProbeSpec(probes=["lda", "masc", "lda"], variance=3.0, sensitivity=[0.5, 2.0])
    assert spec.probes == ("masc", "lda") and spec.variance == 3 and isinstance(spec.variance, int)
    assert spec.sensitivity == (0.5, 2)


def test_required_correct_rounds_the_target():
    assert required_correct(0.999, 60000) == 59940
    assert required_correct(1.0, 1437) == 1437
    assert required_correct(0.991, 1000) == 991
