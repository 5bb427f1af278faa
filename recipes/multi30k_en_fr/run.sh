#!/usr/bin/env bash
# Multi30k En-Fr: both claims of "Train Large, Then Compress" at demo scale, on the machine this runs on.
# prepare data -> train a size grid for one wall-clock budget each -> compression sweep (BLEU) -> report.
set -euo pipefail
RECIPE=multi30k_en_fr
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

usage() {
    cat <<'EOF'
usage: recipes/multi30k_en_fr/run.sh [--quick | --tiny] [options]

Trains transformer_wmt_en_fr_d*_h* models of several widths and depths on Multi30k En-Fr, each for the same
wall-clock budget, compresses every one (pruning 0-90%, 8/6/4/3/2-bit quantization, both combined; with the
paper's magnitude pruning and round-to-nearest, and with the calibrated SparseGPT and GPTQ), scores each with
fairseq-generate --scoring sacrebleu on test_2016_flickr, and writes a report that says which model was best
under each memory budget, per compressor family, and whether each lead is significant (paired bootstrap).
A re-run with the same options resumes: finished steps are skipped.

modes (pick one; each has its own default --out):
  (default)         3 models (d2_h128, d2_h256, d2_h384: 1.9M to 11M parameters), 7 min each; each scored on
                    all 1,000 test sentences, beam 4; the quick sweep (15 configs per model: magnitude pruning
                    50/70/90%, round-to-nearest 8/4/3/2 bits, 50% + 4 bits; SparseGPT 70%, GPTQ 8/4/3/2 bits,
                    SparseGPT 50% + GPTQ 4 bits, calibrated on 128 training sentences), beam 4, on the first 500.
                    About 28 minutes on 2 CPU cores. For the full sweep on every test sentence: --grid full
                    --test-lines 0
  --quick           the same 3 sizes for 15 s each; 4 configs per model, greedy, on the first 100 test sentences,
                    outputs cut at 8 tokens. Under 5 minutes.
  --tiny            2 models for 4 s each on 2,000 training pairs; 4 configs on 40 test sentences (smoke test).

options:
  --out DIR         where everything goes (default: runs/multi30k_en_fr, runs/multi30k_en_fr-quick, -tiny)
  --from DIR        the Multi30k raw files (train.en.gz, ..., test_2016_flickr.fr.gz); default: the shared copy
                    in $FAIRSEQ_EXT_DATA/multi30k if there, else downloaded from github.com/multi30k/dataset
  --budget MIN      training minutes per model (wall-clock, fairseq's --stop-time-hours)
  --archs "LIST"    the sizes, e.g. "d2_h256 d6_h512" (transformer_wmt_en_fr_<size>; see scripts/arch_table.py)
  --grid NAME       the sweep's compression grid: full, quick, speed or tiny (see scripts/sweep.py --help)
  --test-lines N    score the sweep on the first N test sentences (0: all 1,000; each model's own score is
                    always on all 1,000)
  --beam N          beam size of the sweep's fairseq-generate (default: 4; --quick and --tiny: 1, greedy)
  --train-args "A"  more fairseq-train options (they come last, so they win), e.g. "--max-tokens 8192"
  --cpu             train on the CPU even if a GPU is there (on a GPU: fp16 mixed precision; on a CPU with
                    AMX or AVX512-BF16: bf16 autocast, --autocast-bf16; FP32=1 in the environment turns it off)
  -h, --help        this text

Everything lands in --out: data/ (text, sentencepiece model, binarized), train/<size>/ (train.log in fairseq's
JSON format, meta.json with params, device and words/s, checkpoints), scores/sweep.jsonl (each model on every
test sentence), sweep.jsonl (and sweep/hyps/: every config's translations, for the significance tests),
report/report.md.
Hyper-parameters are the same for every size, chosen for a budget of a few hundred updates (pre-norm, Adam (0.9,
0.98), lr 2e-3 after a 40-update warm-up, inverse-sqrt decay, label smoothing 0.1, dropout 0.1, 2,048-token
batches); validation every 50 updates on a CPU, 500 on a GPU.
EOF
}

MODE=default OUT="" FROM="" BUDGET="" ARCHS="" GRID="" TEST_LINES="" BEAM="" TRAIN_EXTRA=""

parse_args() {
    while (($#)); do
        case $1 in
            --quick) MODE=quick ;;
            --tiny) MODE=tiny ;;
            --out) need_value "$@"; OUT=$2; shift ;;
            --from) need_value "$@"; FROM=$2; shift ;;
            --budget) need_value "$@"; BUDGET=$2; shift ;;
            --archs) need_value "$@"; ARCHS=$2; shift ;;
            --grid) need_value "$@"; GRID=$2; shift ;;
            --test-lines) need_value "$@"; TEST_LINES=$2; shift ;;
            --beam) need_value "$@"; BEAM=$2; shift ;;
            --train-args) need_value "$@"; TRAIN_EXTRA=$2; shift ;;
            --cpu) FORCE_CPU=1 ;;
            -h | --help) usage; exit 0 ;;
            *) usage_error "unknown option $1" ;;
        esac
        shift
    done
}

# Per mode: data size, sizes, budget, sweep grid and how many test sentences it scores (0 = all of them).
set_mode_defaults() {
    local archs budget grid test_lines
    case $MODE in
        default) archs="d2_h128 d2_h256 d2_h384" budget=7 grid=quick test_lines=500
            PREPARE_ARGS=() ;;
        quick) archs="d2_h128 d2_h256 d2_h384" budget=0.25 grid=tiny test_lines=100
            PREPARE_ARGS=() ;;
        tiny) archs="d2_h128 d2_h256" budget=0.067 grid=tiny test_lines=40
            PREPARE_ARGS=(--train-size 2000 --vocab-size 1000) ;;
    esac
    local suffix=""
    if [[ $MODE != default ]]; then suffix=-$MODE; fi
    OUT=${OUT:-$REPO/runs/multi30k_en_fr$suffix}
    ARCHS=${ARCHS:-$archs}
    BUDGET=${BUDGET:-$budget}
    GRID=${GRID:-$grid}
    TEST_LINES=${TEST_LINES:-$test_lines}
    if [[ -z $FROM && -f $SHARED_DATA/multi30k/train.en.gz ]]; then
        FROM=$SHARED_DATA/multi30k
    fi
}

check_inputs() {
    check_tools fairseq-generate
    [[ -z $FROM || -d $FROM ]] || usage_error "--from $FROM: no such folder"
    [[ $BUDGET =~ ^[0-9]*\.?[0-9]+$ ]] && [[ $BUDGET != 0 ]] || usage_error "--budget $BUDGET: expected minutes > 0"
    [[ $GRID =~ ^(full|quick|speed|tiny)$ ]] || usage_error "--grid $GRID: expected full, quick, speed or tiny"
    [[ $TEST_LINES =~ ^[0-9]+$ ]] && ((TEST_LINES <= 1000)) ||
        usage_error "--test-lines $TEST_LINES: expected a whole number from 0 (all) to 1000"
    [[ -z $BEAM || $BEAM =~ ^[1-9][0-9]*$ ]] || usage_error "--beam $BEAM: expected a whole number > 0"
    # shellcheck disable=SC2086  # a list of sizes
    check_archs transformer_wmt_en_fr_ $ARCHS
}

prepare_data() {
    "$PY" "$REPO/scripts/prepare_multi30k.py" --out "$OUT/data" ${FROM:+--from "$FROM"} "${PREPARE_ARGS[@]}"
    EVAL_DATA=$OUT/data/bin
    if ((TEST_LINES > 0)); then
        EVAL_DATA=$OUT/data/bin-test$TEST_LINES
        [[ -f $EVAL_DATA/test.en-fr.fr.bin ]] || binarize_test_head "$TEST_LINES" "$EVAL_DATA"
        link_training_data "$EVAL_DATA"
    fi
}

# link_training_data DIR: the binarized training set beside DIR's test head (links), which the sweep's calibrated
# configs (SparseGPT, GPTQ) draw their calibration sentences from.
link_training_data() {
    local file
    for file in "$OUT/data/bin"/train.*; do
        [[ -e $1/${file##*/} ]] || ln -s "../bin/${file##*/}" "$1/${file##*/}"
    done
}

# binarize_test_head N DIR: the first N test pairs alone, with the training dictionary, for a shorter sweep.
binarize_test_head() {
    local lines=$1 dest=$2 lang
    mkdir -p "$OUT/data/bpe-test$lines"
    for lang in en fr; do
        head -n "$lines" "$OUT/data/bpe/test.$lang" >"$OUT/data/bpe-test$lines/test.$lang"
    done
    "$BIN/fairseq-preprocess" --source-lang en --target-lang fr --testpref "$OUT/data/bpe-test$lines/test" \
        --srcdict "$OUT/data/bin/dict.en.txt" --joined-dictionary --destdir "$dest.tmp" --workers 1 >/dev/null
    mv "$dest.tmp" "$dest"
}

train_models() {
    local archs=() size
    for size in $ARCHS; do archs+=("transformer_wmt_en_fr_$size"); done
    # Validation and logging intervals are in updates; a GPU makes ~50x more of them in the same time.
    local valid_every=50 log_every=5 workers=0
    if [[ $DEVICE == gpu ]]; then valid_every=500 log_every=50 workers=1; fi
    local args=(
        "$OUT/data/bin" --user-dir "$REPO/fairseq_ext" --task compressed_translation
        --encoder-normalize-before --decoder-normalize-before
        --optimizer adam --adam-betas "(0.9, 0.98)" --clip-norm 1.0
        --lr 2e-3 --lr-scheduler inverse_sqrt --warmup-updates 40 --warmup-init-lr 1e-7
        --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --dropout 0.1
        --max-tokens 2048 --max-tokens-valid 8192 --seed 1 --num-workers "$workers"
        --validate-interval-updates "$valid_every" --log-interval "$log_every" --no-epoch-checkpoints
        "${TRAIN_DEVICE_ARGS[@]}"
    )
    # shellcheck disable=SC2206  # --train-args is a list of words on purpose
    args+=($TRAIN_EXTRA)
    train_grid "$OUT" "$(seconds "$BUDGET")" "${archs[@]}" -- "${args[@]}"
}

# sweep RUN DATA GRID: every model under every config of GRID, scored on DATA's test set, into RUN/sweep.jsonl.
sweep() {
    local run=$1 data=$2 grid=$3 checkpoints=() size beam=$BEAM lengths="--max-len-a 1.2 --max-len-b 10"
    for size in $ARCHS; do checkpoints+=("$size=$OUT/train/$size/checkpoint_last.pt"); done
    # Beam 4, as translation is scored; the quick and tiny modes decode greedily (they need a score, not a good one).
    if [[ -z $beam ]]; then beam=4; [[ $MODE == default ]] || beam=1; fi
    # Seconds-old models decode to the length limit, slowly: the quick and tiny runs need a score, not a good one.
    if [[ $MODE != default ]]; then lengths="--max-len-a 0 --max-len-b 8"; fi
    # fairseq drops a last batch whose size is not a multiple of --required-batch-size-multiple (8 by default):
    # 1 scores every test sentence.
    parallel_sweep "$run" --data "$data" --task translation --subset test --grid "$grid" \
        --generate-args "--beam $beam $lengths --max-tokens 8000 --required-batch-size-multiple 1" \
        -- "${checkpoints[@]}"
}

report() {
    "$PY" "$REPO/scripts/analyze.py" report --run "$OUT" >/dev/null
    "$PY" "$LIB/summary.py" "$OUT"
}

main() {
    parse_args "$@"
    set_mode_defaults
    check_inputs
    detect_device
    local started=$SECONDS
    settings_guard "$OUT" "mode=$MODE" "archs=$ARCHS" "budget_min=$BUDGET" "grid=$GRID" \
        "test_lines=$TEST_LINES" "beam=${BEAM:-auto}" "train_args=$TRAIN_EXTRA" "device=$DEVICE" "from=${FROM:-download}"
    say "mode $MODE on $DEVICE: $(count_models "$ARCHS") x $BUDGET min, sweep grid $GRID, into $OUT"
    step 1 5 "data"
    prepare_data
    step 2 5 "training $(count_models "$ARCHS") for $BUDGET min each"
    train_models
    # Each model's own score on every test sentence (OUT/scores/sweep.jsonl: what the report checks and names the
    # best size by), then the sweep; the sweep scores a head of the test set, which keeps its evaluations short.
    local score_data=$OUT/data/bin score_what="all 1,000 sentences of test_2016_flickr"
    # A smoke test needs the step, not the score: --tiny scores its models on the sweep's head of the test set.
    if [[ $MODE == tiny ]]; then score_data=$EVAL_DATA score_what="the first $TEST_LINES sentences (--tiny)"; fi
    step 3 5 "BLEU of every model on $score_what"
    sweep "$OUT/scores" "$score_data" dense
    local scored="all of test_2016_flickr"
    if ((TEST_LINES > 0)); then scored="the first $TEST_LINES sentences of test_2016_flickr"; fi
    step 4 5 "compression sweep ($GRID grid, BLEU on $scored)"
    sweep "$OUT" "$EVAL_DATA" "$GRID"
    step 5 5 "report"
    report
    say "done in $(((SECONDS - started) / 60))m$(((SECONDS - started) % 60))s; report: $OUT/report/report.md"
}

main "$@"
