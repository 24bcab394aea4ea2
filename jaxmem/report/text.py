"""The plain text the commands print in the terminal (:mod:`jaxmem.cli`): right-aligned tables of accuracies per
member, layer, degree or epoch."""
from __future__ import annotations

from jaxmem.report.tables import summary, unmemorised_members


def format_table(header: list[str], rows: list[list]) -> str:
    """A right-aligned plain-text table (floats to 4 decimals), as the commands print."""
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in [header, *cells])


def input_probe_text(rows: list[dict]) -> str:
    """Per member, probe and subspace kind of an input-layer probing: the test and train accuracies and size."""
    by_member: dict = {}
    for row in rows:
        key = (row["member"], row["probe"], row["subspace_labels"])
        by_member.setdefault(key, {"row": row})[(row["split"], row["scored_against"])] = row["accuracy"]
    return format_table(
        ["degree", "seed", "probe", "subspaces", "test acc", "train vs corrupted", "train vs true",
         "components/class"],
        [[v["row"]["degree"], v["row"]["seed"], v["row"]["probe"], v["row"]["subspace_labels"], v[("test", "true")],
          v[("train", "corrupted")], v[("train", "true")], v["row"]["size"]] for v in by_member.values()])


def layer_probe_text(rows: list[dict], skipped: dict) -> str:
    """Test accuracy per layer and probe, one column per subspace kind, and the probes a streamed layer skipped."""
    test = {(r["layer"], r["probe"], r["subspace_labels"]): r["accuracy"] for r in rows if r["split"] == "test"}
    kinds = list(dict.fromkeys(kind for _, _, kind in test))
    lines = [format_table(["layer", "probe", *(f"{kind} labels" for kind in kinds)],
                          [[layer, probe, *(test.get((layer, probe, kind), float("nan")) for kind in kinds)]
                           for layer, probe in dict.fromkeys((layer, probe) for layer, probe, _ in test)])]
    lines += [f"layer {layer} streamed from disk: {', '.join(names)} skipped (they need the activations in memory)"
              for layer, names in skipped.items()]
    return "\n".join(lines)


def run_text(df, target_train_accuracy: float, stop_on: str) -> str:
    """What ``jaxmem run`` prints: model and best-layer MASC (corrupted and true subspaces) per degree, and whether
    every member reached the stop rule."""
    first = df.iloc[0]
    rows = summary(df)
    rows = rows[rows["probe"] == "masc"]
    best = {kind: rows[rows["subspace_labels"] == kind].set_index("degree") for kind in ("corrupted", "true")}
    unfinished = unmemorised_members(df, target_train_accuracy, stop_on)
    if unfinished:
        stage = "at the last trained epoch, NOT memorised (stopped by --max-epochs: " + ", ".join(
            f"member {m} epoch {e} train {100 * a:.2f} %" for m, (e, a) in unfinished.items()) + ")"
    else:
        stage = "after memorisation"
    table = format_table(
        ["degree", "model", "MASC corrupted", "layer", "MASC true", "layer"],
        [[degree, 100 * r["model_test"], 100 * r["best_test"], r["best_layer"],
          100 * best["true"].loc[degree, "best_test"], best["true"].loc[degree, "best_layer"]]
         for degree, r in best["corrupted"].iterrows()])
    return f"\n{first['dataset']} × {first['model']}: test accuracy (%, mean over seeds) {stage}\n{table}"


def dynamics_text(df) -> str:
    """What ``jaxmem dynamics`` prints: test accuracy (%, mean over members) per epoch, probe and layer."""
    tests = df[(df["split"] == "test") & (df["subspace_labels"] != "true")]
    curves = tests.pivot_table(index="epoch", columns=["probe", "layer"], values="accuracy", aggfunc="mean")
    return (f"test accuracy (mean over members) per epoch, {len(curves)} epochs:\n"
            + (100 * curves).round(1).to_string())


def edit_text(model_rows, edited_rows: list[dict], members, *, subspace_labels: str, keep_bias: bool) -> str:
    """What ``jaxmem edit`` prints: each member's accuracies before → after the last-layer edit."""
    edited = {(r["member"], r["split"], r["scored_against"]): r["accuracy"] for r in edited_rows}
    model = {(r.member, r.split, r.scored_against): r.accuracy for r in model_rows.itertuples()}
    keys = [("train", "corrupted"), ("train", "true"), ("test", "true")]
    table = format_table(
        ["member", "degree", "seed"] + [f"{split} vs {against}" for split, against in keys],
        [[m, member.degree, member.seed] + [f"{model[(m, *key)]:.4f} → {edited[(m, *key)]:.4f}" for key in keys]
         for m, member in enumerate(members)])
    return (f"last layer edited with the linear probe ({subspace_labels} labels, bias "
            f"{'kept' if keep_bias else 'zero'}): accuracy, model → edited\n{table}")


def edit_continue_text(table, edit_epoch: int) -> str:
    """What ``jaxmem edit --edit-epoch E`` prints: test accuracy (%) edited vs unedited at three epochs."""
    test = table[(table["split"] == "test")].pivot_table(index="epoch", columns="probe", values="accuracy")
    return (f"test accuracy (%), edited at epoch {edit_epoch} vs unedited:\n"
            + (100 * test).round(1).iloc[[0, len(test) // 2, -1]].to_string())


def train_text(result, members) -> str:
    """What ``jaxmem train`` prints: each member's stop epoch and final train and test accuracies (a
    :class:`jaxmem.train.TrainResult`)."""
    final = result.metrics
    return format_table(["member", "degree", "seed", "stop epoch", "train acc", "test acc"],
                        [[m, member.degree, member.seed, int(result.stop_epoch[m]),
                          float(final.train_correct[-1, m]) / result.num_train,
                          float(final.test_correct[-1, m]) / result.num_test] for m, member in enumerate(members)])
