"""The papers' published figures (:func:`jaxmem.report.compare` sets a results table beside them).

Figures are test accuracies in %, mean of the authors' 3 runs (which share one corrupted label vector), at the best
layer, n = 0.99 unless said otherwise; recovered from the authors' notebooks and result files (paper 1). Tables:

* ``model``: the memorised model's final test accuracy;
* ``masc_corrupted`` / ``masc_true``: best-layer MASC with subspaces from the corrupted / true training labels;
* ``probes``: every probe fitted on the corrupted labels (the authors' second, longer-trained MLP-MNIST checkpoints);
* ``sensitivity``: MASC at other variances n (corrupted labels; run 1 except n = 0.99);
* ``dynamics`` (paper 2, :data:`DYNAMICS`): MLP-MNIST at p = 0.8, run 1, MASC per layer and the zero-bias edited
  model (= the linear probe on fc4) at the epochs the authors' files hold.

For MLP-MNIST the figures come from two sets of the authors' checkpoints (:data:`CHECKPOINTS`): tables ``model``,
``masc_corrupted`` and ``masc_true`` from paper 1's own runs (their code is not public; 123–133 epochs at p = 0.8),
``probes``, ``sensitivity`` and ``dynamics`` from the public trainer ``MASC_during_training/CNN_code/mlp_mnist.py``
of simranketha/Dynamics_during_training_DNN (stopped on the running accuracy; 266–324 epochs at p = 0.8).

This module holds data only and imports nothing of jaxmem.
"""
from __future__ import annotations

DEGREES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
NAN = float("nan")


def _row(*values):
    return dict(zip(DEGREES, values))


MODEL = {
    ("mnist", "mlp"): _row(97.88, 87.38, 73.28, 54.17, 32.10, 9.81),
    ("cifar10", "mlp"): _row(56.37, 48.62, 40.35, 30.55, 19.69, 9.81),
    ("mnist", "cnn"): _row(99.15, 87.52, 69.44, 47.11, 28.30, 9.85),
    ("fashion_mnist", "cnn"): _row(90.74, 77.74, 61.35, 43.26, 25.57, 10.08),
    ("cifar10", "cnn"): _row(74.96, 60.48, 46.15, 30.96, 18.32, 9.89),
    ("cifar100", "alexnet_cifar100"): _row(36.75, 28.44, 20.53, 9.65, 3.43, 0.96),
    ("tiny_imagenet", "alexnet_tiny_imagenet"): _row(15.89, 9.75, 5.45, 2.02, 0.73, 0.44),
    ("cifar10", "resnet18"): _row(NAN, 67.39, 51.53, 34.48, 20.02, NAN),
}
# The authors' three MLP-MNIST runs of paper 1, per degree, at their stop: the epochs to it and the test accuracy
# (simranketha/MASC_DNN, Compare_experiments/model_accuracy/MNIST_MLP/<p>/Run<r>_Accuracy.csv, the row before the
# last, which Table_values.ipynb reads; e.g. 0.8/Run1: "129,1.0,0.27873334288597107,0.3172999918460846,130").
MLP_MNIST_EPOCHS = _row((51, 53, 50), (168, 165, 170), (148, 159, 150), (139, 140, 142), (130, 123, 133),
                        (119, 121, 123))
MLP_MNIST_RUN_TEST = _row((97.77, 97.90, 97.96), (86.94, 87.40, 87.80), (72.22, 73.36, 74.26), (53.76, 53.78, 54.96),
                          (31.73, 32.51, 32.05), (9.74, 9.98, 9.72))
# The public trainer's three runs per degree (simranketha/Dynamics_during_training_DNN,
# MASC_during_training/angle_results/MNIST_MLP/Accuracy_results/<p>/Run_<r>.csv, the last row, whose running train
# accuracy is 100.0 in every file, p = 1.0 included; e.g. 0.8/Run_2: "265,266,100.0,30.53"): epochs to the
# running-accuracy stop and test accuracy.
PUBLIC_TRAINER_EPOCHS = _row((58, 53, 61), (298, 297, 307), (298, 310, 292), (263, 297, 283), (296, 266, 324),
                             (336, 334, 287))
PUBLIC_TRAINER_RUN_TEST = _row((98.17, 97.87, 98.11), (88.44, 87.89, 88.69), (71.14, 72.25, 72.20),
                               (52.28, 53.92, 53.16), (31.26, 30.53, 31.76), (9.89, 9.97, 10.42))

MASC_CORRUPTED = {
    ("mnist", "mlp"): _row(NAN, 96.93, 96.46, 94.81, 83.43, NAN),
    ("cifar10", "mlp"): _row(NAN, 53.44, 50.21, 44.90, 32.43, NAN),
    ("mnist", "cnn"): _row(NAN, 96.10, 95.16, 93.60, 85.21, NAN),
    ("fashion_mnist", "cnn"): _row(NAN, 83.56, 81.90, 80.00, 73.91, NAN),
    ("cifar10", "cnn"): _row(NAN, 61.87, 49.04, 39.33, 29.34, NAN),
    ("cifar100", "alexnet_cifar100"): _row(NAN, 37.99, 31.44, 15.90, 4.97, NAN),
    ("tiny_imagenet", "alexnet_tiny_imagenet"): _row(NAN, 12.43, 8.36, 2.94, 0.83, NAN),
    ("cifar10", "resnet18"): _row(NAN, 67.12, 62.01, 57.68, 43.88, NAN),
}

MASC_TRUE = {
    ("mnist", "mlp"): _row(NAN, 96.95, 96.74, 96.29, 95.79, NAN),
    ("cifar10", "mlp"): _row(NAN, 53.97, 52.57, 50.99, 48.45, NAN),
    ("mnist", "cnn"): _row(NAN, 96.87, 96.87, 96.55, 96.07, NAN),
    ("fashion_mnist", "cnn"): _row(NAN, 84.25, 81.65, 81.75, 79.90, NAN),
    ("cifar10", "cnn"): _row(NAN, 62.47, 52.35, 48.99, 43.72, NAN),
    ("cifar100", "alexnet_cifar100"): _row(NAN, 39.47, 34.68, 22.55, 15.01, NAN),
    ("tiny_imagenet", "alexnet_tiny_imagenet"): _row(NAN, 12.99, 10.02, 5.19, 2.28, NAN),
    ("cifar10", "resnet18"): _row(NAN, 69.36, 68.14, 66.74, 65.79, NAN),
}

# probe name in the results table -> {(dataset, model): {degree: %}}
PROBES = {
    "masc": {("mnist", "mlp"): {0.0: 97.15, 0.4: 96.05, 0.8: 80.35},
             ("mnist", "cnn"): {0.0: 99.22, 0.4: 95.39, 0.8: 83.95}, ("cifar10", "cnn"): {0.8: 29.34}},
    "logreg": {("mnist", "mlp"): {0.0: 98.04, 0.4: 92.13, 0.8: 76.60},
               ("mnist", "cnn"): {0.0: 99.29, 0.4: 82.10, 0.8: 40.96}, ("cifar10", "cnn"): {0.8: 22.00}},
    "ncm": {("mnist", "mlp"): {0.0: 97.05, 0.4: 93.36, 0.8: 85.58},
            ("mnist", "cnn"): {0.0: 99.11, 0.4: 95.89, 0.8: 91.17}, ("cifar10", "cnn"): {0.8: 43.45}},
    "knn": {("mnist", "mlp"): {0.0: 98.03, 0.4: 89.17, 0.8: 39.97},
            ("mnist", "cnn"): {0.0: 99.37, 0.4: 89.32, 0.8: 40.67}, ("cifar10", "cnn"): {0.8: 22.68}},
    "lda": {("mnist", "mlp"): {0.0: 98.07, 0.4: 94.63, 0.8: 86.24},
            ("mnist", "cnn"): {0.0: 99.25, 0.4: 97.49, 0.8: 93.26}, ("cifar10", "cnn"): {0.8: 32.96}},
    "qda": {("mnist", "mlp"): {0.0: 92.20, 0.4: 96.64, 0.8: 94.31},
            ("mnist", "cnn"): {0.0: 99.02, 0.4: 95.39, 0.8: 86.84}, ("cifar10", "cnn"): {0.8: 38.03}},
}

# results-table probe name (``masc(n=…)`` rows of a sensitivity run) -> {(dataset, model): {degree: %}}
SENSITIVITY = {
    "masc(n=0.25)": {("mnist", "mlp"): _row(97.19, 95.13, 93.16, 89.54, 84.40, NAN)},
    "masc(n=0.5)": {("mnist", "mlp"): _row(97.19, 95.06, 95.33, 95.00, 92.48, NAN)},
    "masc(n=0.75)": {("mnist", "mlp"): _row(96.98, 96.57, 96.52, 95.89, 92.17, NAN),
                     ("mnist", "cnn"): _row(99.11, 97.17, 96.86, 96.10, 93.44, NAN)},
    "masc": {("mnist", "mlp"): _row(97.15, 97.22, 96.05, 93.82, 80.35, NAN),
             ("mnist", "cnn"): _row(99.22, 96.24, 95.39, 93.33, 83.95, NAN)},
    "masc(n=1)": {("mnist", "mlp"): _row(97.19, 95.13, 93.27, 90.35, 84.40, NAN),
                  ("mnist", "cnn"): _row(99.12, 97.06, 95.80, 94.35, 89.78, NAN)},
}


# Which of the authors' MLP-MNIST checkpoint sets a table's figures come from (other models: paper 1's runs).
CHECKPOINTS = {"model": "paper 1", "masc_corrupted": "paper 1", "masc_true": "paper 1",
               "probes": "public trainer", "sensitivity": "public trainer", "dynamics": "public trainer"}

# Paper 2 (MLP-MNIST, p = 0.8, run 1): (probe, layer) -> {epoch: test accuracy %}. MASC at n = 0.99 with
# corrupted-label subspaces from the authors' class-wise files (folders 230–255 are contaminated and left out);
# "linear" on fc4 is their zero-bias edited model, which predicts what that probe predicts.
DYNAMICS = {
    ("masc", "fc1"): {0: 49.56, 2: 65.84, 10: 71.11, 20: 72.23, 40: 68.14, 80: 57.04, 120: 62.34, 200: 64.57,
                      260: 64.61, 295: 64.36},
    ("masc", "fc2"): {0: 79.76, 2: 82.01, 10: 90.75, 20: 91.68, 40: 91.04, 80: 82.62, 120: 77.33, 200: 75.69,
                      260: 74.43, 295: 75.06},
    ("masc", "fc3"): {0: 85.28, 2: 88.27, 10: 93.45, 20: 93.68, 40: 92.74, 80: 88.45, 120: 83.54, 200: 81.99,
                      260: 81.46, 295: 81.09},
    ("masc", "fc4"): {0: 85.79, 2: 89.03, 10: 93.19, 20: 93.09, 40: 91.82, 80: 86.97, 120: 79.50, 200: 73.19,
                      260: 71.09, 295: 70.24},
    ("linear", "fc4"): {2: 72.85, 6: 87.40, 10: 89.08, 20: 89.87, 40: 89.28, 80: 86.07, 120: 84.69, 200: 84.20,
                        245: 83.29, 295: 82.10},
}


def paper_entries():
    """``(table, probe, subspace_labels, {(dataset, model): {degree: %}})`` for every published figure."""
    yield "model", "model", "none", MODEL
    yield "masc_corrupted", "masc", "corrupted", MASC_CORRUPTED
    yield "masc_true", "masc", "true", MASC_TRUE
    for probe, values in PROBES.items():
        yield "probes", probe, "corrupted", values
    for probe, values in SENSITIVITY.items():
        yield "sensitivity", probe, "corrupted", values
