#!/usr/bin/env bash
# Copy what a training run needs to resume on another machine into DEST: config.json, members.csv, the newest
# checkpoint and the results table (copied after the checkpoint, so it holds every row the checkpoint counts;
# rows past it are recomputed on resume, identically), and dynamics.csv when present. Safe while the run trains.
# The kept epochs (epochs/) are not copied, except the EPOCHs named (e.g. 40, which edit-then-continue starts
# from): probe them first into RUN_DIR/dynamics.csv (scripts/probe_saved_epochs.py RUN_DIR RUN_DIR/dynamics.csv)
# if the machine will not keep them.
# Resume: copy DEST's files into an empty run directory and rerun the same training command there
# (scripts/experiments/grid_mnist_mlp.sh does so by itself from its snapshot folder).
# Usage: scripts/experiments/snapshot_run.sh RUN_DIR DEST [EPOCH ...]
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 RUN_DIR DEST [EPOCH ...]" >&2; exit 2; }
run="$1" dest="$2"; shift 2
for epoch in "$@"; do
    [ -d "$run/epochs/$epoch" ] || { echo "$0: $run has no kept epoch $epoch" >&2; exit 2; }
done
[ -f "$run/config.json" ] || { echo "$0: $run is not a training run directory (no config.json)" >&2; exit 2; }
newest="$(find "$run/checkpoints" -mindepth 1 -maxdepth 1 -type d -regex '.*/[0-9]+' -printf '%f\n' 2>/dev/null \
          | sort -n | tail -1)"
[ -n "$newest" ] || { echo "$0: $run has no checkpoint yet" >&2; exit 2; }
mkdir -p "$(dirname "$dest")"
tmp="$(mktemp -d "${dest%/}.tmp.XXXXXX")"
mkdir -p "$tmp/checkpoints"
cp -r "$run/checkpoints/$newest" "$tmp/checkpoints/"
cp "$run/config.json" "$run/members.csv" "$tmp/"
[ -f "$run/dynamics.csv" ] && cp "$run/dynamics.csv" "$tmp/"
for epoch in "$@"; do mkdir -p "$tmp/epochs" && cp -r "$run/epochs/$epoch" "$tmp/epochs/"; done
"$(dirname "$0")/committed_table.sh" "$run" > "$tmp/results.csv"
rm -rf "$dest" && mv "$tmp" "$dest"
echo "snapshot of $run at epoch $newest: $dest"
