#!/usr/bin/env bash
# One command for a GPU machine: everything worth measuring, within about 10 minutes of device time.
#
#   benchmarks/device_suite.sh OUT_DIR            # full sizes; needs JAXMEM_DATA_DIR (the MNIST files)
#   benchmarks/device_suite.sh OUT_DIR --tiny     # the same steps at toy sizes on CPU (tests/test_device_suite.py)
#   GRID_MAX_EPOCHS=200 benchmarks/device_suite.sh OUT_DIR   # cap the grid's epochs (its report then says which
#                                                            # members had not memorised)
# Not yet run on a GPU: the 10-minute budget is the target, not a measurement.
#
# Steps (each writes JSON or a table under OUT_DIR and prints its figures; OUT_DIR/suite.json records the device,
# the versions, each step's wall time and exit status):
#   1. probe/      benchmarks/probe_bench.py: MASC fast and exact vs the numpy reference (60000 × 2048 layer)
#   2. train/      benchmarks/train_bench.py at M = 1, 8, 18 for the MLP and the CNN: vmapped vs sequential vs
#                  PyTorch (on CUDA when torch has it; skipped on a GPU when it does not)
#   3. planner/    the planner's memory estimate for the grid of step 4 on this device
#   4. grid/       jaxmem sweep: MLP-MNIST paper grid, p = 0, 0.2, …, 1 × seeds 0, 1, 2 (18 members), all 60000
#                  samples, paper preset, trained to memorisation, every layer probed with every probe;
#                  then jaxmem report -> grid/report/report.md
# A failing step is recorded and the suite goes on; the exit status is 1 if any step failed.
set -uo pipefail

if [[ $# -lt 1 || "$1" == -* ]]; then
    echo "usage: $0 OUT_DIR [--tiny]" >&2
    exit 2
fi
OUT=$1
TINY=0
if [[ "${2:-}" == "--tiny" ]]; then
    TINY=1
elif [[ $# -gt 1 ]]; then
    echo "usage: $0 OUT_DIR [--tiny]  (unknown option ${2})" >&2
    exit 2
fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHON=${PYTHON:-python}
mkdir -p "$OUT"/probe "$OUT"/train "$OUT"/planner "$OUT"/grid
STEPS="$OUT/steps.tsv"
: > "$STEPS"

if [[ $TINY == 1 ]]; then
    export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
    PROBE_ARGS=(--tiny --repeat 1)
    MEMBER_COUNTS=(2)
    TRAIN_ARGS=(--steps 2 --repeats 1)
    GRID_DATA=(--datasets digits --train-subset 96 --test-subset 48)
    GRID_ARGS=(--degrees 0,1 --seeds 0 --max-epochs 2)
    # QDA (an eigendecomposition per class of the 2048-wide layers) and logistic regression take minutes on a
    # CPU even at toy sizes; the rows of the others have the same columns.
    GRID_PROBES=masc,linear,ncm,knn,lda
else
    if [[ -z "${JAXMEM_DATA_DIR:-}" ]]; then
        echo "$0: set JAXMEM_DATA_DIR to the folder with the MNIST files (or pass --tiny)" >&2
        exit 2
    fi
    PROBE_ARGS=(--repeat 3)
    MEMBER_COUNTS=(1 8 18)
    TRAIN_ARGS=()
    GRID_DATA=(--datasets mnist --data-dir "$JAXMEM_DATA_DIR")
    GRID_ARGS=(--degrees 0,0.2,0.4,0.6,0.8,1 --seeds 0,1,2)
    GRID_PROBES=all
    if [[ -n "${GRID_MAX_EPOCHS:-}" ]]; then  # the preset trains to 100 % train accuracy, at most 500 epochs
        GRID_ARGS+=(--max-epochs "$GRID_MAX_EPOCHS")
    fi
fi

step() {  # step NAME COMMAND...: run, time, record; never stop the suite
    local name=$1
    shift
    echo "=== $name: $*"
    local start status
    start=$EPOCHREALTIME
    "$@"
    status=$?
    printf '%s\t%s\t%s\n' "$name" "$status" "$(awk "BEGIN {print $EPOCHREALTIME - $start}")" >> "$STEPS"
    echo "=== $name: exit $status"
}

step probe "$PYTHON" "$HERE/probe_bench.py" "${PROBE_ARGS[@]}" --json "$OUT/probe/probe.json"
for members in "${MEMBER_COUNTS[@]}"; do
    step "train_M$members" "$PYTHON" "$HERE/train_bench.py" --members "$members" --models mlp,cnn \
        "${TRAIN_ARGS[@]}" --json "$OUT/train/train_M$members.json"
done
step planner "$PYTHON" "$HERE/suite.py" plan "${GRID_DATA[@]}" "${GRID_ARGS[@]}" --json "$OUT/planner/planner.json"
step grid "$PYTHON" -m jaxmem.cli sweep "${GRID_DATA[@]}" --models mlp "${GRID_ARGS[@]}" --probes "$GRID_PROBES" \
    --clean-subspaces none --quiet --out "$OUT/grid"
step report "$PYTHON" -m jaxmem.cli report "$OUT/grid/results.csv" --out "$OUT/grid/report"
"$PYTHON" "$HERE/suite.py" summarize "$OUT"

! cut -f2 "$STEPS" | grep -qv '^0$'
