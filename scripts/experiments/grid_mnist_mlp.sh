#!/usr/bin/env bash
# The MLP-MNIST paper grid at full scale with the authors' protocol (all 60000 / 10000 samples, the paper preset:
# running-accuracy stop, fixed order, paper-2 epochs kept), one run directory per member, in the order
#   p = 0.8, 0, 0.4, 0.2, 0.6, 1.0 (seed 0), then p = 0.8 with seeds 1 and 2.
# Each member, once trained: every probe on corrupted and true subspaces with MASC at n = 0.25 / 0.5 / 0.75 / 1
# too (p = 0 also with subspaces from its labels corrupted at every q of the grid), the last-layer edit at the
# stop, the dynamics (MASC + linear, corrupted-label subspaces, every hidden layer, every kept epoch), and at
# every p > 0 (seed 0) the label-error comparison; p = 0.8 seed 0 also edit-then-continue from epoch 40 and
# relabel-and-fine-tune.
# Usage: scripts/experiments/grid_mnist_mlp.sh [--data-dir D]   (or JAXMEM_DATA_DIR); JAXMEM_GRID_OUT (default
# runs/grid-mnist-mlp). Resumable: rerun the same command after an interruption; every step skips what it has.
# On a machine without the run directory, a member resumes from its committed snapshot (scripts/experiments/
# snapshot_run.sh RUN_DIR $JAXMEM_GRID_SNAPSHOT/p<degree>-s<seed>; default docs/paper-mnist-mlp/grid-in-progress).
# A member whose results are committed under $JAXMEM_GRID_COMPLETED/p<degree>-s<seed> (default
# docs/paper-mnist-mlp/grid; copied there with scripts/experiments/grid_commit.sh) is skipped on a machine without its
# run directory.
# JAXMEM_GRID_REDO="p0.8-s0 ..." retrains those members although their results are committed (grid_commit.sh
# replaces them when they complete); a run directory of the same name must not exist. A member with a snapshot
# in progress resumes from it whether or not its results are committed.
# ≈ 13 s per training epoch on 2 idle CPU cores; ≈ 300 epochs at p >= 0.2, ≈ 60 at p = 0.
set -euo pipefail
out="${JAXMEM_GRID_OUT:-runs/grid-mnist-mlp}"
snapshots="${JAXMEM_GRID_SNAPSHOT:-docs/paper-mnist-mlp/grid-in-progress}"
completed="${JAXMEM_GRID_COMPLETED:-docs/paper-mnist-mlp/grid}"
for member in "0.8 0" "0 0" "0.4 0" "0.2 0" "0.6 0" "1.0 0" "0.8 1" "0.8 2"; do
    read -r degree seed <<<"$member"
    dir="$out/p$degree-s$seed"
    common=(--dataset mnist --degrees "$degree" --seeds "$seed" --checkpoint-epochs paper2 --out "$dir" "$@")
    clean=none
    [ "$degree" = 0 ] && clean=0.2,0.4,0.6,0.8,1.0
    step() { echo "== $(date -u +%FT%TZ) p = $degree, seed $seed: $1"; }
    snapshot="$snapshots/p$degree-s$seed"
    if [ ! -e "$dir/config.json" ] && [ -f "$completed/p$degree-s$seed/summary.md" ] && [ ! -d "$snapshot/checkpoints" ] \
       && [[ " ${JAXMEM_GRID_REDO:-} " != *" p$degree-s$seed "* ]]; then
        step "complete in $completed/p$degree-s$seed (JAXMEM_GRID_REDO=p$degree-s$seed redoes it)"; continue
    fi
    if [ ! -e "$dir/config.json" ] && [ -d "$snapshot/checkpoints" ]; then
        step "resume from the snapshot $snapshot"; mkdir -p "$dir"; cp -r "$snapshot/." "$dir/"
    fi
    step train
    # the kept epochs are probed beside the training (into dynamics.csv, joined before the dynamics step), so that a
    # machine stopped mid-training loses none of them: the snapshot carries their rows, not their parameters
    prober=
    if [ ! -d "$dir/final" ]; then
        python scripts/probe_saved_epochs.py "$dir" "$dir/dynamics.csv" --wait "$@" & prober=$!
    fi
    jaxmem train "${common[@]}"
    [ -z "$prober" ] || wait "$prober"
    step probes;   jaxmem run "${common[@]}" --probes all --sensitivity 0.25,0.5,0.75,1 --clean-subspaces "$clean"
    step edit;     jaxmem edit "${common[@]}"
    step dynamics
    # epochs probed beside the training (scripts/probe_saved_epochs.py) are not probed again
    [ -f "$dir/dynamics.csv" ] && python scripts/probe_saved_epochs.py "$dir" "$dir/dynamics.csv" --join
    jaxmem dynamics "${common[@]}" --subspaces corrupted
    if [ "$seed" = 0 ] && [ "$degree" != 0 ]; then
        step labels; jaxmem labels "$dir" "${@}"
    fi
    if [ "$seed" = 0 ] && [ "$degree" = 0.8 ]; then
        step edit-continue
        if [ -f "$dir/edit_continue_40.csv" ]; then :
        elif [ -d "$dir/epochs/40" ]; then jaxmem edit "${common[@]}" --paper-setting 40
        else echo "skipped: epoch 40 is not kept in $dir (a run resumed from a snapshot lacks it; retrain from 0 for it)"
        fi
        step relabel
        [ -f "$dir/relabel.csv" ] || jaxmem relabel "${common[@]}"
    fi
    step done
done
