#!/usr/bin/env bash
# The batch-order experiment: the paper's MNIST MLP at p = 0.8 trained in the authors' fixed batch order (stopped,
# as they stop, when the running accuracy reaches 100 %) and shuffled per epoch (stopped when a full pass over the
# training set reaches 100 %: memorised for real), every probe at each run's stop; then one table and plot in
# docs/order-mnist-mlp/n<TRAIN_SUBSET>/ and the page's tables on stdout. On a training subset: all of MNIST, with
# the dynamics and the edit, is configs/order_mnist_mlp.toml beside the paper grid's fixed-order member.
# Usage: scripts/experiments/order_mnist_mlp.sh [TRAIN_SUBSET] [DEGREE]   (default 10000 samples, p = 0.8)
# Needs JAXMEM_DATA_DIR (the MNIST IDX files). Resumable: rerun the same command after an interruption.
set -euo pipefail
subset=${1:-10000}
degree=${2:-0.8}
out="${JAXMEM_ORDER_OUT:-runs/order}"
common=(--dataset mnist --degrees "$degree" --seeds 0 --train-subset "$subset" --probes all
        --sensitivity 0.25,0.5,0.75,1 --clean-subspaces none)
jaxmem run "${common[@]}" --order fixed --out "$out/fixed-p$degree-n$subset"
jaxmem run "${common[@]}" --order shuffle --stop-on eval --out "$out/shuffle-p$degree-n$subset"
python "$(dirname "$0")/order_report.py" --out "docs/order-mnist-mlp/n$subset" \
    "fixed=$out/fixed-p$degree-n$subset" "shuffle=$out/shuffle-p$degree-n$subset"
