#!/usr/bin/env bash
# Print a run's results table up to its last finished append (the size in results.csv.committed), never a row the
# run is still writing. Used by snapshot_run.sh and grid_commit.sh.
# Usage: scripts/experiments/committed_table.sh RUN_DIR > TABLE
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 RUN_DIR" >&2; exit 2; }
size="$(cat "$1/results.csv.committed" 2>/dev/null || stat -c %s "$1/results.csv")"
head -c "$size" "$1/results.csv"
