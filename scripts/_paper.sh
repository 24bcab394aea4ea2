# Shared by the per-table scripts: one sweep cell with the paper's grid, then its report.
# Usage (from a script): paper_table DATASET MODEL TITLE [extra jaxmem sweep arguments, e.g. --data-dir D]
# Environment: JAXMEM_DATA_DIR (or pass --data-dir), JAXMEM_PAPER_OUT (default runs/paper).
set -euo pipefail

paper_table() {
    local dataset=$1 model=$2 title=$3
    shift 3
    local out="${JAXMEM_PAPER_OUT:-runs/paper}/${dataset}-${model}"
    jaxmem sweep --datasets "$dataset" --models "$model" \
        --degrees 0,0.2,0.4,0.6,0.8,1.0 --seeds 0,1,2 \
        --probes all --sensitivity 0.25,0.5,0.75,1 --relabel \
        --out "$out" "$@"
    case " $* " in *" --dry-run "*) return 0 ;; esac
    jaxmem report "$out/results.csv" --title "$title"
}
