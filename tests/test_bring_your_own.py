"""docs/bring-your-own.md: a PyTorch CNN dumped with forward hooks probes exactly like jaxmem's converted network."""
import re
from pathlib import Path

import numpy as np
import pytest

from jaxmem.cli import main
from jaxmem.config import ProbeSpec
from jaxmem.experiments.activations import load_activations
from jaxmem.experiments.probing import probe_activations
from jaxmem.probes import masc
from jaxmem.results import read_rows

pytest.importorskip("torch", reason="the worked example needs PyTorch (jaxmem[reference])")

DOC = Path(__file__).resolve().parents[1] / "docs" / "bring-your-own.md"


@pytest.mark.slow
def test_pytorch_dump_probes_exactly_like_the_converted_network(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    dump, check = [b for b in blocks if "register_forward_hook" in b or "torch_to_cnn" in b]
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(dump, namespace)  # noqa: S102 - the page's own code
    exec(check, namespace)  # noqa: S102
    results = tmp_path / "run" / "results.csv"
    assert main(["probe", "--activations", "cnn_digits.npz", "--precision", "exact", "--probes", "linear,ncm",
                 "--out", str(results.parent)]) == 0
    torch_acts, own_acts = load_activations("cnn_digits.npz"), load_activations("jaxmem_digits.npz")
    assert sorted(torch_acts.layers) == sorted(own_acts.layers) == ["fc1", "fc2", "fc3", "flat", "input"]
    for name, layer in torch_acts.layers.items():
        np.testing.assert_allclose(layer.train, own_acts.layers[name].train, rtol=1e-9, atol=1e-9)
        fitted = [masc.fit(np.asarray(acts.layers[name].train), acts.y_train, 10, precision="exact")
                  for acts in (torch_acts, own_acts)]
        predictions = [np.asarray(masc.predict(probe, np.asarray(acts.layers[name].test)))
                       for probe, acts in zip(fitted, (torch_acts, own_acts))]
        np.testing.assert_array_equal(*predictions)
    own_rows = probe_activations(own_acts, ProbeSpec(probes=["linear", "ncm"], precision="exact")).rows
    key = ("layer", "probe", "subspace_labels", "split", "scored_against", "n_correct")
    cli_rows = read_rows(results)
    assert sorted(map(tuple, cli_rows[list(key)].values.tolist())) == sorted(tuple(r[k] for k in key) for r in own_rows)
