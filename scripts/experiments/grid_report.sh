#!/usr/bin/env bash
# Rebuild docs/paper-mnist-mlp/report.md (tables, plots, the paper comparison) from the grid's committed member
# tables (docs/paper-mnist-mlp/grid/p*/results.csv, copied there by grid_commit.sh as each member completes).
# The prose beside it, what each member shows and why it differs from the papers, is docs/paper-mnist-mlp/README.md.
set -euo pipefail
grid="${JAXMEM_GRID_COMPLETED:-docs/paper-mnist-mlp/grid}"
jaxmem report "$grid"/p*/results.csv --out "$(dirname "$grid")" --exclude-layers input \
    --title "The MLP-MNIST paper grid at full scale, the authors' protocol"
