"""The trained-run object (:mod:`jaxmem.experiments.trained`), and the layering of the experiment modules."""
from __future__ import annotations

import ast
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxmem.data import load_dataset, member_train_labels, normalize, subset
from jaxmem.experiments.cost import load_run_dataset
from jaxmem.experiments.trained import TrainedRun, open_run
from jaxmem.features import member_logits, member_variables
from jaxmem.models import get_model
from jaxmem.train import load_member_params, read_run_config, split_member_keys

EXPERIMENTS = Path(__file__).resolve().parents[1] / "jaxmem" / "experiments"
# the shared base of the experiments: any experiment module may import these, and they import only each other
BASE_LAYER = {"probing", "activations", "distributed", "trained", "finetuning"}


@pytest.fixture(scope="module")
def digits_run(train_digits_run):
    return train_digits_run("trained", "--degrees", "0,0.8", "--max-epochs", "1", "--train-subset", "120",
                            "--test-subset", "60")


def test_open_run_reads_the_run_once_and_gives_what_the_stages_built_by_hand(digits_run):
    dataset = load_run_dataset(digits_run)
    run = open_run(digits_run, dataset)
    spec, members = read_run_config(digits_run)
    assert run.spec == spec and list(run.members) == members and run.model_name == members[0].model
    assert run.model is run.model and run.x_train is run.x_train  # built once
    for mine, theirs in ((run.x_train, normalize(dataset.name, dataset.x_train)),
                         (run.x_test, normalize(dataset.name, dataset.x_test))):
        assert mine.dtype == theirs.dtype and mine.tobytes() == theirs.tobytes()
    np.testing.assert_array_equal(run.given, member_train_labels(dataset, members))
    np.testing.assert_array_equal(jax.random.key_data(run.train_keys),
                                  jax.random.key_data(split_member_keys(members)[1]))
    variables = run.variables("final")
    expected = member_variables(*load_member_params(digits_run, "final"))
    assert jax.tree.structure(variables) == jax.tree.structure(expected)
    for mine, theirs in zip(jax.tree.leaves(variables), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(mine, theirs)
    model = get_model(members[0].model, dataset.num_classes, init=spec.init, dropout=spec.dropout)
    assert type(run.model) is type(model)
    np.testing.assert_array_equal(member_logits(run.model, variables, run.x_test[:8]),
                                  member_logits(model, expected, run.x_test[:8]))


def test_open_run_refuses_another_dataset_in_one_line(digits_run):
    dataset = load_run_dataset(digits_run)
    for other in (subset(dataset, 100), load_dataset("digits")):
        with pytest.raises(ValueError, match="is not the one") as refused:
            open_run(digits_run, other)
        assert "\n" not in str(refused.value)


def test_a_run_built_from_a_stage_s_arguments_reads_no_config(digits_run, tmp_path):
    dataset = load_run_dataset(digits_run)
    spec, members = read_run_config(digits_run)
    run = TrainedRun.of(dataset, members, spec, tmp_path / "not-yet-written")
    assert run.given.shape == (len(members), len(dataset.y_train)) and run.x_test.shape[0] == len(dataset.y_test)
    with pytest.raises(FileNotFoundError):
        run.variables()


def _sibling_imports(path: Path) -> set[str]:
    """The modules of jaxmem.experiments that ``path`` imports (anywhere in it, also inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x / from .x import y
                module = node.module or ""
                names = [f"jaxmem.experiments.{module}" if module else f"jaxmem.experiments.{a.name}"
                         for a in node.names]
            elif node.module == "jaxmem.experiments":
                names = [f"jaxmem.experiments.{alias.name}" for alias in node.names]
            else:
                names = [node.module or ""]
        else:
            continue
        found |= {name.split(".")[2] for name in names if name.startswith("jaxmem.experiments.")}
    return found - {path.stem}


def test_no_experiment_module_imports_a_sibling_outside_the_base_layer():
    modules = {path.stem: path for path in EXPERIMENTS.glob("*.py") if path.stem != "__init__"}
    assert BASE_LAYER <= set(modules) and {"labels", "relabel", "dynamics", "cost"} <= set(modules)
    sideways = {name: sorted(_sibling_imports(path) - BASE_LAYER) for name, path in modules.items()}
    assert {name: found for name, found in sideways.items() if found} == {}
