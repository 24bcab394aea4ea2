"""The batch-order page's script (scripts/experiments/order_report.py) on the committed full-scale fixed-order
member and a copy of it cut at an epoch in training: the one table, the stop and the probes at the stop only where
the run stopped, the dynamics at the epochs both runs kept."""
import importlib.util
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).parents[1]
FIXED = ROOT / "docs/paper-mnist-mlp/grid/mnist-mlp/p0.8-s0"


def _script():
    spec = importlib.util.spec_from_file_location("order_report", ROOT / "scripts/experiments/order_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_order_page_marks_a_run_in_training_as_so_far(tmp_path, capsys):
    from jaxmem.results import read_rows, write_table

    training = tmp_path / "training"
    training.mkdir()
    shutil.copy(FIXED / "config.json", training)
    rows = read_rows(FIXED / "results.csv")
    early = rows[rows["epoch"] <= 100]
    write_table(early[early["probe"] == "model"], training / "results.csv")
    write_table(early[early["probe"] != "model"], training / "dynamics.csv")  # the kept epochs probed beside
    _script().main(["--out", str(tmp_path / "page"), f"fixed={FIXED}", f"training={training}"])
    printed = capsys.readouterr().out
    stop = json.loads((FIXED / "config.json").read_text())["train"]["max_epochs"]
    last = int(rows.loc[rows["probe"] == "model", "epoch"].max())
    assert last < stop and f"| fixed | {last} (stop) |" in printed
    assert "| training | 100 (so far, in training) |" in printed and "| training | 120" not in printed
    table = read_rows(tmp_path / "page" / "results.csv.gz")
    assert set(table["order"]) == {"fixed", "training"} and len(table) == len(rows) + len(early)
    # the probes at a stop: the fixed run's only, at its last epoch, not the peak of its dynamics
    probes = printed.split("| subspaces | probe |")[1]
    assert probes.startswith(" fixed |\n") and "training" not in probes.split("\n\n")[0]
    masc = rows.query("probe == 'masc' and subspace_labels == 'corrupted' and split == 'test' and layer != 'input'")
    assert f"| corrupted | masc | {100 * masc[masc['epoch'] == last]['accuracy'].max():.2f} (" in probes
    # the dynamics at the epochs both hold: the same rows, so the same best layers and accuracies
    dynamics = printed.split("| epoch | masc, fixed |")[1]
    forty = next(line for line in dynamics.splitlines() if line.startswith("| 40 |")).strip("|").split("|")
    assert forty[1] == forty[2] and forty[3] == forty[4] and "| 120 |" not in dynamics
    for name in ("accuracy.png", "dynamics.png"):
        assert (tmp_path / "page" / name).stat().st_size > 0
