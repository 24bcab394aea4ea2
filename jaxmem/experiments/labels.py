"""Which training labels are wrong? Every method's verdict on each training label of a memorised member, scored
against the known corruption mask (docs/methods.md#which-labels-are-wrong).

Methods (the ``probe`` column), each giving per sample a flag (the label is judged wrong), an issue score for
ranking (higher: more likely wrong) and a suggested label:

* ``model``: the memorised network itself: flagged where its prediction differs from the given label, ranked by
  1 − its softmax probability of the given label, suggesting its prediction.
* each probe of :mod:`jaxmem.probes.registry`, fitted on the given labels at the layer chosen on the reference's
  20 % test split as :mod:`jaxmem.experiments.relabel` chooses it (:mod:`jaxmem.experiments.finetuning`): flagged
  where its prediction differs, ranked by minus the margin of the given label's score over the best other
  class's (MASC: cos²), suggesting its prediction.
* ``cleanlab_cv``: confident learning (``cleanlab.filter.find_label_issues``, ranked by minus
  ``cleanlab.rank.get_label_quality_scores``) on out-of-sample probabilities from K-fold cross-validated
  logistic regression (scikit-learn, :func:`cross_validated_probs`) at MASC's chosen layer; suggesting the most
  probable class on flagged samples.
* ``cleanlab_model``: the same on the memorised model's own softmax (in-sample, so nearly nothing is flagged).

Rows of ``labels.csv`` (the results table's columns; ``split`` names the metric, ``scored_against`` is
``"true"``: everything is scored against the true labels; ``epoch`` -1, or the kept fine-tuning epoch):

* ``flag_precision`` / ``flag_recall`` / ``flag_f1``: n_correct / n_seen = TP / flagged, TP / wrong labels,
  2·TP / (2·TP + FP + FN).
* ``rank_ap`` / ``rank_auroc``: average precision and AUROC of the ranking (``accuracy`` holds the value;
  n_correct / n_seen are the wrong labels and the samples ranked, whose ratio is a random ranking's AP).
* ``rank_precision@R``: interpolated precision at recall R (the best precision at any recall ≥ R; n_correct /
  n_seen = TP / ranked above that threshold), the points of the precision–recall curve.
* ``relabel_fixed`` / ``relabel_broken``: with the suggested labels, wrong labels made right / wrong labels, and
  right labels made wrong / right labels.
* with fine-tuning: ``model`` on ``test_report`` before it (epoch 0), and per method ``relabel_test_report``
  (trained on the suggested labels) and ``drop_test_report`` (the flagged samples left out), the 80 % report
  part's accuracy at the early-stopped epoch (:func:`jaxmem.experiments.finetuning.finetune`).

A method's rows of one member are told apart by (member, probe, split): the verdict splits at epoch -1, the two
fine-tuning splits, and the model's ``test_report`` before fine-tuning. :func:`label_issues` keeps its settings in
the run's manifest (stage ``labels``) and computes only the rows the table lacks (:func:`missing_labels`).
"""
from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple, Sequence

import jax
import numpy as np

from jaxmem.config import MemberSpec
from jaxmem.data import Dataset
from jaxmem.experiments.finetuning import REFERENCE_SPLIT_SEED, choose_layers, finetune, split_test
from jaxmem.experiments.probing import fit_and_score
from jaxmem.experiments.trained import open_run
from jaxmem.features import collect_activations, member_logits, member_variables
from jaxmem.manifest import forget_stage, holding, record_stage
from jaxmem.models import chosen_probe_layers
from jaxmem.probes.registry import PROBES, check_probe_names, select_probes
from jaxmem.results import accuracy_row, append_rows, read_rows
from jaxmem.train import concat_members
from jaxmem.train.rundir import CONFIG_FILE

LABELS_FILE = "labels.csv"
OLD_OPTIONS_FILE = "labels.json"  # where runs made before the manifest kept the settings (adopted once)
PR_RECALLS = tuple(np.round(np.linspace(0.1, 1.0, 10), 1))
CLEANLAB_INSTALL = "cleanlab is not installed: pip install 'jaxmem[labels]' (or pip install 'cleanlab>=2.6')"
VERDICT_SPLITS = ("flag_precision", "flag_recall", "flag_f1", "relabel_fixed", "relabel_broken",
                  *(f"rank_precision@{level:g}" for level in PR_RECALLS), "rank_ap", "rank_auroc")
TUNED_SPLITS = ("relabel_test_report", "drop_test_report")
OUTPUT_METHODS = ("model", "cleanlab_model")  # the methods that read the model's output, not a probe layer


class Verdict(NamedTuple):
    """One method's verdict on every training label of one member."""

    flagged: np.ndarray  # [N] bool: the given label is judged wrong
    issue: np.ndarray  # [N] float: ranking score, higher = more likely wrong
    suggested: np.ndarray  # [N] int: the label it would give (the given one where not flagged)


# ------------------------------------------------------------------------------------------------ verdicts


def given_label_margin(scores: np.ndarray, given: np.ndarray) -> np.ndarray:
    """Score of the given label minus the best other class's: [..., N] from scores [..., N, C], labels [..., N]."""
    scores = np.asarray(scores, np.float64)
    own = np.take_along_axis(scores, given[..., None], axis=-1)[..., 0]
    others = scores.copy()
    np.put_along_axis(others, given[..., None], -np.inf, axis=-1)
    return own - others.max(axis=-1)


def probe_verdict(scores: np.ndarray, given: np.ndarray) -> Verdict:
    """A probe's scores [N, C]: flagged where its prediction (argmax) is not the given label."""
    predicted = np.argmax(scores, axis=-1)
    return Verdict(predicted != given, -given_label_margin(scores, given), predicted)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.asarray(logits, np.float64) - np.max(logits, axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def model_verdict(logits: np.ndarray, given: np.ndarray) -> Verdict:
    """The model's logits [N, C]: flagged where it predicts another class, ranked by 1 − p(given label)."""
    probs = softmax(logits)
    predicted = np.argmax(logits, axis=-1)
    return Verdict(predicted != given, 1 - np.take_along_axis(probs, given[:, None], axis=-1)[:, 0], predicted)


def import_cleanlab():
    """``(cleanlab.filter, cleanlab.rank)``, or ``ValueError`` saying how to install cleanlab."""
    try:
        import cleanlab.filter
        import cleanlab.rank
    except ImportError:
        raise ValueError(CLEANLAB_INSTALL) from None
    return cleanlab.filter, cleanlab.rank


def cleanlab_verdict(probs: np.ndarray, given: np.ndarray) -> Verdict:
    """Confident learning on predicted probabilities [N, C] (out-of-sample for it to mean anything)."""
    cl_filter, cl_rank = import_cleanlab()
    flagged = np.asarray(cl_filter.find_label_issues(given, probs, n_jobs=1), bool)
    quality = cl_rank.get_label_quality_scores(given, probs)
    return Verdict(flagged, -np.asarray(quality, np.float64), np.where(flagged, np.argmax(probs, axis=-1), given))


def fold_assignment(num_samples: int, folds: int, seed: int) -> np.ndarray:
    """Fold index [N] of each sample: a seeded permutation cut into ``folds`` nearly equal parts."""
    if not 2 <= folds <= num_samples:
        raise ValueError(f"folds must be between 2 and the {num_samples} training samples, got {folds}")
    fold = np.empty(num_samples, int)
    for k, part in enumerate(np.array_split(np.random.RandomState(seed).permutation(num_samples), folds)):
        fold[part] = k
    return fold


def cross_validated_probs(features, labels: np.ndarray, num_classes: int, *, folds: int = 5,
                          seed: int = 0, max_iter: int = 1000) -> np.ndarray:
    """Out-of-sample class probabilities [M, N, C] for features [M, N, D] and labels [M, N]: scikit-learn's
    ``cross_val_predict(..., method="predict_proba")`` with standardised features and multinomial logistic
    regression (L-BFGS to convergence, whatever N), on one seeded fold split shared by all members."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fold = fold_assignment(labels.shape[-1], folds, seed)
    splits = [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(folds)]
    probs = np.zeros(labels.shape + (num_classes,))
    for m in range(labels.shape[0]):
        present = np.unique(labels[m])  # columns of predict_proba: the classes seen in training
        estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
        probs[m][:, present] = cross_val_predict(estimator, np.asarray(features[m], np.float64), labels[m],
                                                 cv=splits, method="predict_proba")
    return probs


# ------------------------------------------------------------------------------------------------- metrics


def flag_counts(flagged: np.ndarray, wrong: np.ndarray) -> tuple[int, int, int]:
    """``(true positives, false positives, false negatives)`` of a flagged set against the wrong-label mask."""
    flagged, wrong = np.asarray(flagged, bool), np.asarray(wrong, bool)
    return int(np.sum(flagged & wrong)), int(np.sum(flagged & ~wrong)), int(np.sum(~flagged & wrong))


def _threshold_counts(wrong: np.ndarray, issue: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(TP, ranked)`` at each distinct issue score, highest first (ties enter together)."""
    issue = np.asarray(issue, np.float64)
    if np.isnan(issue).any():
        raise ValueError("issue scores contain NaN")
    order = np.argsort(-issue, kind="mergesort")
    ranked = issue[order]
    last = np.r_[np.flatnonzero(ranked[1:] != ranked[:-1]), len(ranked) - 1]  # end of each tie group
    return np.cumsum(np.asarray(wrong, bool)[order])[last], last + 1


def average_precision(wrong: np.ndarray, issue: np.ndarray) -> float:
    """Σ (R_k − R_{k−1}) P_k over the distinct thresholds (scikit-learn's average_precision_score)."""
    tp, ranked = _threshold_counts(wrong, issue)
    if tp[-1] == 0:
        return float("nan")
    return float(np.sum(np.diff(np.r_[0, tp]) / tp[-1] * tp / ranked))


def roc_auc(wrong: np.ndarray, issue: np.ndarray) -> float:
    """Probability that a wrong label outranks a right one, ties counting one half (Mann–Whitney U)."""
    from scipy.stats import rankdata

    wrong = np.asarray(wrong, bool)
    positives, negatives = int(wrong.sum()), int((~wrong).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(np.asarray(issue, np.float64))
    return float((ranks[wrong].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def interpolated_precision(wrong: np.ndarray, issue: np.ndarray, recalls: Sequence[float] = PR_RECALLS
                           ) -> list[tuple[int, int]]:
    """Per recall level R, ``(TP, ranked)`` at the threshold of best precision among those with recall ≥ R."""
    tp, ranked = _threshold_counts(wrong, issue)
    precision = tp / ranked
    out = []
    for level in recalls:
        reach = np.flatnonzero(tp >= level * tp[-1] - 1e-9) if tp[-1] else np.array([], int)
        best = reach[np.argmax(precision[reach])] if len(reach) else None
        out.append((0, 0) if best is None else (int(tp[best]), int(ranked[best])))
    return out


def verdict_rows(index: int, member: MemberSpec, method: str, layer: str, subspace_labels: str,
                 verdict: Verdict, given: np.ndarray, true: np.ndarray) -> list[dict]:
    """The rows of one member's verdict by one method (see the module docstring)."""
    wrong = given != true
    tp, fp, fn = flag_counts(verdict.flagged, wrong)
    fixed = verdict.suggested[wrong] == true[wrong]
    broken = verdict.suggested[~wrong] != true[~wrong]
    counts = [("flag_precision", tp, tp + fp), ("flag_recall", tp, tp + fn), ("flag_f1", 2 * tp, 2 * tp + fp + fn),
              ("relabel_fixed", fixed.sum(), fixed.size), ("relabel_broken", broken.sum(), broken.size)]
    counts += [(f"rank_precision@{level:g}", hit, seen)
               for level, (hit, seen) in zip(PR_RECALLS, interpolated_precision(wrong, verdict.issue))]

    def row(split, n_correct, n_seen):
        return accuracy_row(index, member, epoch=-1, probe=method, layer=layer, subspace_labels=subspace_labels,
                            split=split, scored_against="true", n_correct=n_correct, n_seen=n_seen)

    rows = [row(*entry) for entry in counts]
    for split, value in (("rank_ap", average_precision(wrong, verdict.issue)),
                         ("rank_auroc", roc_auc(wrong, verdict.issue))):
        rows.append({**row(split, wrong.sum(), wrong.size), "accuracy": value})
    return rows


# --------------------------------------------------------------------------------------------------- a run


class Scoring(NamedTuple):
    """Every method's verdict on every member's labels."""

    verdicts: dict  # {method: [Verdict per member]}
    layers: dict  # {method: [layer per member]}


def label_methods(probes: Sequence[str]) -> tuple[str, ...]:
    """The methods (``probe`` column) of a call with these probes: the model, cleanlab on its softmax, each probe
    (MASC always: cleanlab's cross-validation reads MASC's chosen layer) and cleanlab on cross-validation."""
    return (*OUTPUT_METHODS, *dict.fromkeys(["masc", *probes]), "cleanlab_cv")


def score_labels(model, variables, dataset: Dataset, given: np.ndarray, *, layers: Sequence[str],
                 probes: Sequence[str], methods: Sequence[str] | None = None, folds: int = 5, seed: int = 0,
                 split_seed: int = REFERENCE_SPLIT_SEED, variance: float | int = 0.99, precision: str = "fast",
                 memory_budget: float = 2**31, progress: bool = False) -> Scoring:
    """Verdicts of the model, each probe (its layer chosen on the select part of the test split) and cleanlab,
    for members with parameters ``variables`` (member axis) and given training labels [M, N]; only those of
    ``methods`` (default: every one of :func:`label_methods`), and only the probes among them are fitted (and
    MASC for ``cleanlab_cv``).

    One engine pass fits every probe once per layer and keeps its training scores, so a probe's verdict comes from
    the very fit whose test predictions chose its layer; cleanlab's cross-validation reads MASC's chosen layers.
    Each probe is fitted and its layer chosen on its own (its key is ``seed`` whatever else is fitted), so a
    verdict does not depend on the other methods asked for. ``progress``: a line per layer probed and per layer
    cross-validated, on stderr."""
    methods = label_methods(probes) if methods is None else tuple(methods)
    unknown = sorted(set(methods) - set(label_methods(probes)))
    if unknown:
        raise ValueError(f"unknown label methods {unknown}; choose from {', '.join(label_methods(probes))}")
    wanted = [name for name in label_methods(probes) if name not in (*OUTPUT_METHODS, "cleanlab_cv")
              and (name in methods or (name == "masc" and "cleanlab_cv" in methods))]
    num_members, num_classes = len(given), dataset.num_classes
    x_train = dataset.inputs("train")
    verdicts, method_layers = {}, {}
    if any(name in methods for name in OUTPUT_METHODS):
        logits = member_logits(model, variables, x_train)
        outputs = {"model": lambda m: model_verdict(logits[m], given[m]),
                   "cleanlab_model": lambda m: cleanlab_verdict(softmax(logits[m]), given[m])}
        for name in OUTPUT_METHODS:
            if name in methods:
                verdicts[name] = [outputs[name](m) for m in range(num_members)]
                method_layers[name] = ["output"] * num_members
    chosen = {}
    if wanted:
        selected = select_probes(wanted, variance=variance, precision=precision)
        select, _ = split_test(len(dataset.y_test), split_seed)
        fitted = fit_and_score(model, variables, dataset, {"corrupted": given}, layers, probes=selected,
                               precision=precision, memory_budget=memory_budget, seed=seed, train_scores=True,
                               progress=progress)
        chosen = {name: [layers[b] for b in choose_layers({layer: fitted[layer, "corrupted", name].test
                                                           for layer in layers}, dataset.y_test[select], select)]
                  for name in selected}
        for name in selected:
            if name in methods:
                verdicts[name] = [probe_verdict(fitted[layer, "corrupted", name].train_scores[m], given[m])
                                  for m, layer in enumerate(chosen[name])]
                method_layers[name] = chosen[name]
    if "cleanlab_cv" in methods:
        verdicts["cleanlab_cv"] = [None] * num_members
        for layer in dict.fromkeys(chosen["masc"]):
            at = np.flatnonzero(np.asarray(chosen["masc"]) == layer)
            features = collect_activations(model, variables, x_train, (layer,))[layer]
            since = time.monotonic()
            probs = cross_validated_probs(features[at], given[at], num_classes, folds=folds, seed=seed)
            if progress:
                print(f"cleanlab: {folds}-fold cross-validated probabilities on {layer} in "
                      f"{time.monotonic() - since:.0f} s", file=sys.stderr, flush=True)
            for i, m in enumerate(at):
                verdicts["cleanlab_cv"][m] = cleanlab_verdict(probs[i], given[m])
        method_layers["cleanlab_cv"] = chosen["masc"]
    order = [name for name in methods if name in verdicts]
    return Scoring({name: verdicts[name] for name in order}, {name: method_layers[name] for name in order})


def scoring_rows(scoring: Scoring, member_ids: Sequence[int], members: Sequence[MemberSpec], given: np.ndarray,
                 true: np.ndarray) -> list[dict]:
    """The verdict rows of every method for the members ``member_ids`` (their positions in the scoring)."""
    rows = []
    for method, verdicts in scoring.verdicts.items():
        kind = "none" if method in OUTPUT_METHODS else "corrupted"
        for m, member_id in enumerate(member_ids):
            rows += verdict_rows(member_id, members[m], method, scoring.layers[method][m], kind, verdicts[m],
                                 given[m], true)
    return rows


def cleaned_labels(scoring: Scoring, given: np.ndarray) -> dict[str, np.ndarray]:
    """Per fine-tuning variant ``{"relabel", "drop"}``, labels [methods × M, N] in method-major order: the suggested
    labels, and the given ones with the flagged samples dropped (label -1)."""
    relabel = [v.suggested for verdicts in scoring.verdicts.values() for v in verdicts]
    drop = [np.where(v.flagged, -1, given[m]) for verdicts in scoring.verdicts.values()
            for m, v in enumerate(verdicts)]
    return {"relabel": np.stack(relabel).astype(np.int32), "drop": np.stack(drop).astype(np.int32)}


def finetune_rows(model, spec, params, batch_stats, scoring: Scoring, given, dataset, member_ids, members, keys, *,
                  max_epochs: int, patience: int, split_seed: int, progress: bool) -> list[dict]:
    """Fine-tune every member on each method's relabelled and dropped training set (all copies in one program);
    rows of the model before it and of each copy's kept epoch on the report part (the model's only, when
    ``scoring`` has no method)."""
    select, report = split_test(len(dataset.y_test), split_seed)
    y_report = dataset.y_test[report]
    methods = list(scoring.verdicts)
    num_members = len(member_ids)
    before = member_logits(model, member_variables(params, batch_stats),
                           dataset.inputs("test")[report]).argmax(-1)
    rows = [accuracy_row(member_id, members[m], epoch=0, probe="model", layer="output", subspace_labels="none",
                         split="test_report", scored_against="true", n_correct=np.sum(before[m] == y_report),
                         n_seen=len(y_report)) for m, member_id in enumerate(member_ids)]
    if not methods:
        return rows
    labels = cleaned_labels(scoring, given)
    copies = 2 * len(methods)
    tuned = finetune(model, spec, concat_members(*[params] * copies), concat_members(*[batch_stats] * copies),
                     np.concatenate([labels["relabel"], labels["drop"]]), concat_members(*[keys] * copies),
                     dataset, select, report, max_epochs=max_epochs, patience=patience, progress=progress,
                     # one vmapped program for all copies: on CPU the trainer's default (one member after the
                     # other) would compile a program that repeats the epoch for each of the many copies
                     member_chunk=copies * len(member_ids))
    for v, variant in enumerate(("relabel", "drop")):
        for c, method in enumerate(methods):
            kind = "none" if method in OUTPUT_METHODS else "corrupted"
            for m, member_id in enumerate(member_ids):
                i = (v * len(methods) + c) * num_members + m
                rows.append(accuracy_row(member_id, members[m], epoch=int(tuned.best_epoch[i]), probe=method,
                                         layer=scoring.layers[method][m], subspace_labels=kind,
                                         split=f"{variant}_test_report", scored_against="true",
                                         n_correct=np.sum(tuned.report_pred[i] == y_report), n_seen=len(y_report)))
    return rows


def _of_methods(scoring: Scoring, methods) -> Scoring:
    """The scoring of the methods in ``methods`` only."""
    return Scoring(*({method: values for method, values in part.items() if method in methods} for part in scoring))


class LabelsRun(NamedTuple):
    """What :func:`label_issues` returns."""

    table: object  # the whole labels.csv (DataFrame)
    computed: list  # member indices computed in this call (empty: everything was already there)
    skipped: list  # member indices without a wrong label (p = 0), left out


class Missing(NamedTuple):
    """What one member lacks in a labels table."""

    scored: tuple  # methods without their verdict rows
    tuned: tuple  # methods without their fine-tuning rows (empty when not fine-tuning)
    before: bool  # the model's row on the report part before fine-tuning is missing


def missing_labels(table, member_ids: Sequence[int], methods: Sequence[str], fine_tune: bool) -> dict[int, Missing]:
    """Per member of ``member_ids`` that lacks any, the rows of ``methods`` a labels table (DataFrame or None)
    lacks: a method is scored when its member has every verdict split, fine-tuned when it has both fine-tuning
    splits; the rows themselves tell, whatever call wrote them."""
    have = set() if table is None else set(zip(table["member"].astype(int), table["probe"], table["split"]))
    plan = {}
    for m in member_ids:
        m = int(m)
        scored = tuple(x for x in methods if not all((m, x, split) in have for split in VERDICT_SPLITS))
        tuned = tuple(x for x in methods if fine_tune and not all((m, x, split) in have for split in TUNED_SPLITS))
        before = fine_tune and (m, "model", "test_report") not in have
        if scored or tuned or before:
            plan[m] = Missing(scored, tuned, before)
    return plan


def _append_whole(path: Path, rows: list[dict]) -> None:
    """Append rows so that the table on disk always ends with a whole row (a copy, then an atomic replace)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(path.read_bytes() if path.exists() else b"")
    append_rows(partial, rows)
    partial.replace(path)


def _start_over_or_adopt(run_dir: Path, redo: bool) -> None:
    """``redo``: delete the table and forget the manifest's ``labels`` entry. Otherwise a run whose settings sit
    in the old ``labels.json`` has them moved into the manifest, once; a table with neither is refused."""
    table, old = run_dir / LABELS_FILE, run_dir / OLD_OPTIONS_FILE
    if redo:
        table.unlink(missing_ok=True)
        old.unlink(missing_ok=True)
        forget_stage(run_dir, "labels")
        return
    if "labels" in json.loads((run_dir / CONFIG_FILE).read_text()):
        return
    if old.exists():
        saved = json.loads(old.read_text())
        record_stage(run_dir, "labels", {k: v for k, v in saved.items() if k != "probes"},
                     {"probes": saved["probes"], "fine_tune": "finetune_epochs" in saved}, way_out="")
        old.unlink()
    elif table.exists():
        raise ValueError(f"{table} has no labels settings in {run_dir / CONFIG_FILE}; rerun with --redo to "
                         f"recompute it")


@holding("run_dir")
def label_issues(run_dir: str | Path, dataset: Dataset, *, probes: Sequence[str] = tuple(PROBES),
                 layers: Sequence[str] | None = None, folds: int = 5, seed: int = 0,
                 split_seed: int = REFERENCE_SPLIT_SEED, variance: float | int = 0.99, fine_tune: bool = False,
                 finetune_epochs: int = 30, patience: int = 3, redo: bool = False, progress: bool = True,
                 memory_budget: float = 2**31) -> LabelsRun:
    """Score every training label of every member of a trained run at its final parameters; append the rows the
    table lacks to ``run_dir/labels.csv``: per member, each method's verdict rows (and, with ``fine_tune``, its
    fine-tuning rows). Members without a wrong label are skipped (``ValueError`` when none has one).

    ``dataset`` must be the run's own (:func:`jaxmem.experiments.cost.load_run_dataset`). The settings are kept in
    the run's manifest as the stage ``labels``. ``probes`` (and ``fine_tune``) are requests: a rerun with another
    probe computes only that probe's rows (not the model's, cleanlab's or the other probes'). ``folds``, ``seed``,
    ``split_seed``, ``variance`` and ``layers`` are the identity, refused when changed (``ValueError`` naming the
    field); so are ``finetune_epochs`` and ``patience`` once a call fine-tunes (they only change the fine-tuning
    rows). ``redo`` starts over: the table and the manifest's entry are deleted.

    ``layers`` is identity, not a request: a probe's verdict is that of the layer it chose among all ``layers``
    (best on the 20 % select part), and cleanlab's cross-validation reads MASC's chosen layer, so an added layer
    can change the chosen layer, and with it every existing probe and ``cleanlab_cv`` row; the rows keep only the
    chosen layer, so rows chosen among other layers could not be told apart.
    """
    run_dir = Path(run_dir)
    import_cleanlab()
    run = open_run(run_dir, dataset)
    spec, members = run.spec, run.members
    params, batch_stats = run.params()
    layers = chosen_probe_layers(run.model_name, layers)
    probes = check_probe_names(probes)
    fold_assignment(len(dataset.y_train), folds, seed)
    if finetune_epochs < 1 or patience < 1:
        raise ValueError(f"fine-tuning epochs and patience must be >= 1, got {finetune_epochs} and {patience}")
    given = run.given
    noisy = (given != dataset.y_train).any(axis=1)
    if not noisy.any():
        raise ValueError(f"no training label is wrong in any member of {run_dir} (all at p = 0): nothing to find")
    _start_over_or_adopt(run_dir, redo)
    identity = {"layers": list(layers), "folds": folds, "seed": seed, "split_seed": split_seed, "variance": variance}
    if fine_tune:
        identity.update(finetune_epochs=finetune_epochs, patience=patience)
    record_stage(run_dir, "labels", identity, {"probes": list(probes), "fine_tune": fine_tune},
                 way_out=f"repeat the run's settings, or rerun with --redo to compute {LABELS_FILE} again with these")
    path = run_dir / LABELS_FILE
    done = read_rows(path) if path.exists() else None
    have = set() if done is None else set(zip(done["member"].astype(int), done["probe"], done["split"]))
    methods = label_methods(probes)
    plan = missing_labels(done, np.flatnonzero(noisy), methods, fine_tune)
    groups = defaultdict(list)  # members that lack the same rows are computed together
    for m, lack in plan.items():
        groups[lack.scored, lack.tuned].append(m)
    model = run.model if plan else None
    for (scored, tuned), ids in groups.items():
        pick = np.asarray(ids)
        part = jax.tree.map(lambda leaf: leaf[pick], (params, batch_stats))
        wanted = [x for x in methods if x in scored or x in tuned]
        rows, scoring = [], Scoring({}, {})
        if wanted:
            scoring = score_labels(model, member_variables(*part), dataset, given[pick], layers=layers,
                                   probes=probes, methods=wanted, folds=folds, seed=seed, split_seed=split_seed,
                                   variance=variance, memory_budget=memory_budget, progress=progress)
            rows += scoring_rows(_of_methods(scoring, scored), ids, [members[m] for m in pick], given[pick],
                                 dataset.y_train)
        if fine_tune:
            rows += finetune_rows(model, spec, *part, _of_methods(scoring, tuned), given[pick], dataset, ids,
                                  [members[m] for m in pick], run.train_keys[pick],
                                  max_epochs=finetune_epochs, patience=patience, split_seed=split_seed,
                                  progress=progress)
        fresh = [row for row in rows if (row["member"], row["probe"], row["split"]) not in have]  # never twice
        if fresh:
            _append_whole(path, fresh)
    return LabelsRun(read_rows(path), sorted(plan), [int(m) for m in np.flatnonzero(~noisy)])
