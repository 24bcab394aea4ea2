#!/usr/bin/env bash
# Copy a finished member's results into DEST: its one table (with the dynamics rows of dynamics.csv joined in),
# reports, plots and config, not checkpoints or kept epochs; commit DEST, and the grid skips the member on a machine
# without its run directory.
# Usage: scripts/experiments/grid_commit.sh RUN_DIR DEST   (e.g. runs/grid-mnist-mlp/p0.8-s0 docs/paper-mnist-mlp/grid/p0.8-s0)
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 RUN_DIR DEST" >&2; exit 2; }
run="$1" dest="$2"
[ -f "$run/summary.md" ] || { echo "$0: $run has no summary.md (its probes have not run yet)" >&2; exit 2; }
mkdir -p "$dest"
for f in labels.csv labels.json labels.md labels_pr.png relabel.csv edit_continue_40.csv \
         members.csv config.json summary.md layers.png; do
    [ -f "$run/$f" ] && cp "$run/$f" "$dest/"
done
"$(dirname "$0")/committed_table.sh" "$run" > "$dest/results.csv"
# dynamics rows probed beside the training (scripts/probe_saved_epochs.py, kept epochs a later machine lacks) join
# the member's one table, every row once
if [ -f "$run/dynamics.csv" ]; then
    python "$(dirname "$0")/../probe_saved_epochs.py" "$dest" "$run/dynamics.csv" --join >/dev/null
    rm -f "$dest/results.csv.committed"  # the size record of that append; DEST is a finished copy
fi
echo "results of $run: $dest"
