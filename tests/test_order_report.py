"""The batch-order page's script (scripts/experiments/order_report.py) on the committed full-scale fixed-order
member and a copy of it cut at an epoch in training: the one table, the stop marked only where the run stopped."""
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
    write_table(rows[(rows["epoch"] <= 100) & (rows["probe"] == "model")], training / "results.csv")
    _script().main(["--out", str(tmp_path / "page"), f"fixed={FIXED}", f"training={training}"])
    printed = capsys.readouterr().out
    stop = json.loads((FIXED / "config.json").read_text())["train"]["max_epochs"]
    last = int(rows.loc[rows["probe"] == "model", "epoch"].max())
    assert last < stop and f"| fixed | {last} (stop) |" in printed
    assert "| training | 100 (so far, in training) |" in printed and "| training | 120" not in printed
    table = read_rows(tmp_path / "page" / "results.csv.gz")
    assert set(table["order"]) == {"fixed", "training"}
    assert len(table) == len(rows) + len(read_rows(training / "results.csv"))
    assert (tmp_path / "page" / "accuracy.png").stat().st_size > 0
