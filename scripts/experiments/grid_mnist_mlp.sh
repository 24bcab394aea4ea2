#!/usr/bin/env bash
# The MLP-MNIST paper grid at full scale with the authors' protocol (all 60000 / 10000 samples, the paper preset:
# running-accuracy stop, fixed order, paper-2 epochs kept), one run directory per member, in the order
#   p = 0.8, 0, 0.4, 0.2, 0.6, 1.0 (seed 0), then p = 0.8 with seeds 1 and 2.
# Usage: scripts/experiments/grid_mnist_mlp.sh [--data-dir D]   (or JAXMEM_DATA_DIR); JAXMEM_GRID_OUT (default runs/grid-mnist-mlp).
# Resumable: rerun the same command after an interruption; finished members are skipped in seconds.
# ≈ 13 s per epoch on 2 idle CPU cores; ≈ 300 epochs at p >= 0.2, ≈ 60 at p = 0.
set -euo pipefail
out="${JAXMEM_GRID_OUT:-runs/grid-mnist-mlp}"
for member in "0.8 0" "0 0" "0.4 0" "0.2 0" "0.6 0" "1.0 0" "0.8 1" "0.8 2"; do
    read -r degree seed <<<"$member"
    echo "== $(date -u +%FT%TZ) p = $degree, seed $seed"
    jaxmem train --dataset mnist --degrees "$degree" --seeds "$seed" --checkpoint-epochs paper2 \
        --out "$out/p$degree-s$seed" "$@"
done
