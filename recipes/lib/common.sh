# Shared by the recipes (sourced, not run). The caller sets RECIPE (its name, for messages) before sourcing.
#
# Environment a user may set:
#   FAIRSEQ_EXT_PYTHON  the python whose fairseq tools to use (default: the repo's .venv, made by `make setup`)
#   FAIRSEQ_EXT_DATA    the folder with the embedded data sets (default: ../shared/data beside the repo)

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=${FAIRSEQ_EXT_PYTHON:-$REPO/.venv/bin/python}
BIN=$(dirname "$PY")
SHARED_DATA=${FAIRSEQ_EXT_DATA:-$(dirname "$REPO")/shared/data}
LIB=$REPO/recipes/lib
# fairseq must never pick up a user's site-packages (the same rule as the Makefile's).
export PYTHONNOUSERSITE=1 PYTHONUNBUFFERED=1

say() { printf '%s: %s\n' "$RECIPE" "$*" >&2; }
die() { printf '%s: error: %s\n' "$RECIPE" "$*" >&2; exit 1; }

# A bad option: the one-line error, then where the usage is.
usage_error() { die "$* (see --help)"; }

# count_models "LIST": "1 model", "6 models".
count_models() { local n; n=$(wc -w <<<"$1"); if ((n == 1)); then echo "1 model"; else echo "$n models"; fi; }

# need_value "$@": the option in $1 takes a value, so there must be a next word, and not another option.
need_value() { (($# >= 2)) && [[ $2 != --* ]] || usage_error "$1 needs a value"; }

# The venv python and the fairseq tools the recipe uses, before any work starts.
check_tools() {
    [[ -x $PY ]] || die "no python at $PY: run \`make setup\` first (or set FAIRSEQ_EXT_PYTHON)"
    local tool
    for tool in fairseq-preprocess fairseq-train "$@"; do
        [[ -x $BIN/$tool ]] || die "$tool not found in $BIN: run \`make setup\` (fairseq is installed into .venv)"
    done
}

# Sets DEVICE, PRECISION and TRAIN_DEVICE_ARGS for fairseq-train: fp16 mixed precision on a GPU; on a CPU, --cpu
# and, where the CPU has bf16 matrix units (AMX, AVX512-BF16), the plugin's --autocast-bf16 (fp32 weights, bf16
# matmuls), which needs a compressed_* task. FORCE_CPU=1 forces the CPU; FP32=1 turns bf16 off.
detect_device() {
    if [[ ${FORCE_CPU:-0} == 1 ]] || ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
        TRAIN_DEVICE_ARGS=(--cpu)
        DEVICE=cpu PRECISION=fp32
        if [[ ${FP32:-0} != 1 ]] && grep -qwE 'amx_bf16|avx512_bf16' /proc/cpuinfo 2>/dev/null; then
            TRAIN_DEVICE_ARGS+=(--autocast-bf16)
            PRECISION="bf16 autocast"
        fi
    else
        TRAIN_DEVICE_ARGS=(--fp16)
        DEVICE=gpu PRECISION=fp16
    fi
    # fairseq-train's batch prefetch runs in a daemon thread (--data-buffer-size, default 10); caught inside torch
    # when the interpreter exits, it aborts a finished run (exit 134, "terminate called without an active
    # exception") about once in ten on torch 2.13 / Python 3.11. Without it every run exits cleanly.
    TRAIN_DEVICE_ARGS+=(--data-buffer-size 0)
}

# step N TOTAL TITLE: a header for each stage, so a long log shows where it is.
step() { say "[$1/$2] $3"; }

# seconds MINUTES: whole seconds of a float number of minutes ("2.5" -> 150).
seconds() { "$PY" -c 'import sys; print(round(float(sys.argv[1]) * 60))' "$1"; }

# settings_guard OUT KEY=VALUE...: the first run records its settings in OUT/settings.txt; a re-run with other
# settings into the same folder would mix incomparable results, so it stops (a re-run with the same ones resumes).
settings_guard() {
    local out=$1
    shift
    local wanted
    wanted=$(printf '%s\n' "$@")
    if [[ -f $out/settings.txt ]]; then
        [[ $(cat "$out/settings.txt") == "$wanted" ]] || die "$out holds a run made with other settings" \
            "($(diff <(cat "$out/settings.txt") <(echo "$wanted") | grep '^[<>]' | tr '\n' ' '| sed 's/ $//')); use another --out"
    else
        mkdir -p "$out"
        echo "$wanted" >"$out/settings.txt"
    fi
}

# train_grid OUT BUDGET_S ARCH... -- FAIRSEQ_ARGS...: every arch for the same wall-clock budget, one after the other
# (never side by side: each must have the machine to itself for its words/s to mean anything).
# Each lands in OUT/train/<short name>/; a finished one (meta.json) is skipped, an interrupted one resumes.
train_grid() {
    local out=$1 budget=$2
    shift 2
    local archs=()
    while [[ $1 != -- ]]; do archs+=("$1"); shift; done
    shift
    local i=0 arch
    for arch in "${archs[@]}"; do
        i=$((i + 1))
        "$PY" "$LIB/train_budget.py" --save-dir "$out/train/$(short_name "$arch")" --arch "$arch" \
            --budget-s "$budget" --label "$i/${#archs[@]}" --models-after $((${#archs[@]} - i)) \
            ${LAUNCH:+--launch "$LAUNCH"} -- "$@"
    done
}

# check_archs PREFIX SIZE...: every PREFIX<size> is a registered grid arch (else one error line with the sizes).
check_archs() {
    local prefix=$1 size
    shift
    for size in "$@"; do
        [[ $size =~ ^d[0-9]+_h[0-9]+$ ]] || usage_error "--archs: $size is not a size like d2_h256"
    done
    "$PY" - "$REPO" "$RECIPE" "$prefix" "$@" <<'EOF' || exit 1
import logging, sys
logging.disable(logging.WARNING)  # fairseq's import-time notes would hide the one line that matters
repo, recipe, prefix, sizes = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
from fairseq_ext.models.grid import GRID_ARCHS
unknown = [size for size in sizes if prefix + size not in GRID_ARCHS]
if unknown:
    known = " ".join(name[len(prefix):] for name in GRID_ARCHS if name.startswith(prefix))
    sys.exit(f"{recipe}: error: --archs: no grid arch {prefix}{unknown[0]} (sizes: {known})")
EOF
}

# short_name ARCH: the model's name in folders, plots and tables (transformer_wmt_en_fr_d2_h256 -> d2_h256).
short_name() { echo "d${1##*_d}"; }

# parallel_sweep RUN SWEEP_OPTION... -- NAME=CHECKPOINT...: scripts/sweep.py for each model on its own (results in
# RUN/sweep/NAME.jsonl, each resumable; translations in RUN/sweep/hyps/), as many models at a time as there are
# cores, then all results together in RUN/sweep.jsonl for the report. Every evaluation is a fresh fairseq process whose start-up is single-threaded and
# whose small-batch decoding scales poorly with threads: N one-thread processes finish far sooner than one with N.
# The recipes list models smallest first; the last (largest, slowest) starts first, and each core that frees up
# takes the next model, so that the fast ones fill in beside the slow one.
parallel_sweep() {
    local run=$1
    shift
    local options=()
    while [[ $1 != -- ]]; do options+=("$1"); shift; done
    shift
    local models=("$@") cores jobs i running=0 failed=0 model
    cores=$(nproc)
    jobs=$((${#models[@]} < cores ? ${#models[@]} : cores))
    mkdir -p "$run/sweep"
    say "sweeping ${#models[@]} models, $jobs at a time"
    for ((i = ${#models[@]} - 1; i >= 0; i--)); do
        if ((running == jobs)); then
            wait -n || failed=1
            running=$((running - 1))
        fi
        OMP_NUM_THREADS=$((cores / jobs)) "$PY" "$REPO/scripts/sweep.py" "${options[@]}" \
            --checkpoint "${models[i]}" --out "$run/sweep/${models[i]%%=*}.jsonl" &
        running=$((running + 1))
    done
    while ((running > 0)); do
        wait -n || failed=1
        running=$((running - 1))
    done
    ((failed == 0)) || die "the compression sweep failed (its error is above); a re-run resumes it"
    # One file for the report; the paths to the kept translations (RUN/sweep/hyps/) become relative to it.
    local parts=()
    for model in "${models[@]}"; do parts+=("$run/sweep/${model%%=*}.jsonl"); done
    "$PY" "$REPO/scripts/analyze.py" merge --sweeps "${parts[@]}" --out "$run/sweep.jsonl" >/dev/null
}
