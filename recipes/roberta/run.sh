#!/usr/bin/env bash
# RoBERTa: masked-LM pretraining of a depth x width grid for one wall-clock budget each, fine-tuning of every
# pretrained model on SST-2 (and any GLUE task you supply) with the control from random weights over several seeds,
# then the pruning / quantization sweep: accuracy vs MB.
set -euo pipefail
RECIPE=roberta
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

usage() {
    cat <<'EOF'
usage: recipes/roberta/run.sh [--tiny] [options]

stages (each finished step is skipped when run again):
  prepare   sentencepiece BPE + binarized pretraining text (--text and the tasks' training sentences, without
            labels); each task encoded with the same BPE and dictionary
  pretrain  every --archs model (roberta_<size>) for the same wall-clock --budget, masked LM (fairseq masked_lm)
  finetune  every pretrained model on every task with --seeds seeds, for the same number of epochs; the control:
            the size with the lowest masked-LM validation loss from random weights, as often
  sweep     every fine-tuned model under pruning / quantization (scripts/sweep.py), with the paper's magnitude
            pruning and round-to-nearest and with the calibrated SparseGPT / GPTQ: dev accuracy vs MB
  report    per task, scripts/analyze.py report: pretraining convergence, the compression frontier, budgets

options:
  --out DIR          everything goes here (default: runs/roberta; --tiny: runs/roberta-tiny)
  --corpus NAME      the pretraining text when --text is not given: imdb, the 75,000 training reviews of the
                     Large Movie Review Dataset, split into sentences ($FAIRSEQ_EXT_DATA/imdb if there, else
                     downloaded from ai.stanford.edu, sha256-checked; never its test reviews), or captions, the
                     Multi30k English captions ($FAIRSEQ_EXT_DATA/multi30k/mono, else downloaded) (default: imdb)
  --text PATH        your pretraining text instead: a file or a folder of *.txt / *.gz files, one sentence per
                     line (lines longer than 50 words or 126 BPE pieces are cut into several samples)
  --task-text N      the tasks' training sentences, without their labels, N times beside the text in the
                     pretraining text (task-adaptive pretraining; never a dev or test sentence); 0: the text
                     alone (default: 8)
  --sst2 DIR         SST-2 as train.tsv / dev.tsv (default: $FAIRSEQ_EXT_DATA/sst2 if there, else downloaded)
  --glue-dir DIR     GLUE data (the folder with MNLI/, QNLI/, ... as the GLUE download script leaves it)
  --tasks "imdb"     also IMDB review classification: fine-tuned on the 25,000 training reviews (first 128 BPE
                     pieces of each), scored on 2,000 test reviews ($FAIRSEQ_EXT_DATA/imdb, else downloaded); the
                     test reviews are never in the pretraining text (not in the hour-long default: 25,000
                     reviews against SST-2's 6,920 sentences; may be added to a finished run's --out)
  --glue-tasks "L"   tasks from --glue-dir to fine-tune on besides SST-2, e.g. "MNLI QNLI" (MNLI QNLI RTE MRPC QQP)
  --archs "LIST"     sizes of roberta_<size> (default: "d3_h256 d6_h256 d3_h512")
  --budget MIN       pretraining minutes per model (default: 7)
  --epochs N         fine-tuning epochs per task (default: 3)
  --seeds N          fine-tuning seeds of every pretrained size and of the control (default: 3; --tiny: 2)
  --grid NAME        compression grid of the sweep: full, quick, speed, tiny (default: quick, so that the whole
                     default run fits an hour on 2 CPU cores; see scripts/sweep.py --help)
  --train-args "A"   more fairseq-train options for pretraining, last so they win
  --cpu              train on the CPU even where a GPU is (on a GPU: fp16 mixed precision; on a CPU with AMX or
                     AVX512-BF16: bf16 autocast, --autocast-bf16; FP32=1 in the environment turns it off)
  --tiny             smoke test: 3,000 lines, 1k BPE, two sizes for a few seconds, 4 fine-tuning updates,
                     2 seeds, the first 256 training and dev examples of each task
  -h, --help         this text

Pretraining (every size the same): pre-norm, one sentence per sample (at most 128 tokens), 15% masking, no dropout,
Adam (0.9, 0.98), lr 2e-3 after a 150-update warm-up, inverse-sqrt decay, 4,096-token batches; validation every 100
updates on a CPU, with the masked-token accuracy (--criterion masked_lm_accuracy).
Fine-tuning: batch 32, lr 5e-4 with 6% warm-up and linear decay (fairseq's RoBERTa GLUE recipe at the learning rate
where the control, from random weights, did best), the same for the pretrained models and the control. Every size is
fine-tuned with seeds 1..--seeds (OUT/<TASK>/finetune/, OUT/<TASK>/finetune-seed<k>/), and the control: the size
whose pretraining ended lowest, from random weights (no pretraining), with every seed (OUT/<TASK>/scratch*/), so
the report shows what pretraining added, mean +- spread over the seeds.
EOF
}

OUT="" TEXT="" CORPUS=imdb EXTRA_TASKS="" SST2="" GLUE_DIR="" GLUE_TASKS="" ARCHS="" BUDGET="" EPOCHS=3 SEEDS="" GRID="" TRAIN_EXTRA="" TINY=0
TASK_TEXT=8

parse_args() {
    while (($#)); do
        case $1 in
            --out) need_value "$@"; OUT=$2; shift ;;
            --text) need_value "$@"; TEXT=$2; shift ;;
            --corpus) need_value "$@"; CORPUS=$2; shift ;;
            --sst2) need_value "$@"; SST2=$2; shift ;;
            --glue-dir) need_value "$@"; GLUE_DIR=$2; shift ;;
            --glue-tasks) need_value "$@"; GLUE_TASKS=$2; shift ;;
            --tasks) need_value "$@"; EXTRA_TASKS=$2; shift ;;
            --archs) need_value "$@"; ARCHS=$2; shift ;;
            --budget) need_value "$@"; BUDGET=$2; shift ;;
            --epochs) need_value "$@"; EPOCHS=$2; shift ;;
            --seeds) need_value "$@"; SEEDS=$2; shift ;;
            --task-text) need_value "$@"; TASK_TEXT=$2; shift ;;
            --grid) need_value "$@"; GRID=$2; shift ;;
            --train-args) need_value "$@"; TRAIN_EXTRA=$2; shift ;;
            --cpu) FORCE_CPU=1 ;;
            --tiny) TINY=1 ;;
            -h | --help) usage; exit 0 ;;
            *) usage_error "unknown option $1" ;;
        esac
        shift
    done
    # Options given win over the mode's defaults.
    MONO_ARGS=() GLUE_ARGS=()
    if ((TINY)); then
        ARCHS=${ARCHS:-d3_h256 d6_h256} BUDGET=${BUDGET:-0.067} GRID=${GRID:-tiny} OUT=${OUT:-$REPO/runs/roberta-tiny}
        SEEDS=${SEEDS:-2}
        MONO_ARGS=(--max-lines 3000 --vocab-size 1000) GLUE_ARGS=(--max-examples 256)
        # 3,000 reviews would be some 30,000 sentences: 300 are about as many as the 3,000 lines of other text
        if [[ -z $TEXT && $CORPUS == imdb ]]; then MONO_ARGS=(--max-lines 300 --vocab-size 1000); fi
    fi
    ARCHS=${ARCHS:-d3_h256 d6_h256 d3_h512} BUDGET=${BUDGET:-7} GRID=${GRID:-quick} SEEDS=${SEEDS:-3}
    OUT=${OUT:-$REPO/runs/roberta}
    # The corpus: a local copy where there is one, else downloaded. Every 250th review is held out (some 3,000
    # validation sentences, as many as the captions gave: fairseq validates every 100 updates on a CPU).
    CORPUS_ARGS=()
    if [[ -z $TEXT ]]; then
        local copy=$SHARED_DATA/multi30k/mono
        if [[ $CORPUS == imdb ]]; then copy=$SHARED_DATA/imdb CORPUS_ARGS=(--valid-every 250); fi
        if ((TINY)) && [[ $CORPUS == imdb ]]; then CORPUS_ARGS=(--valid-every 50); fi
        CORPUS_ARGS=(--corpus "$CORPUS" "${CORPUS_ARGS[@]}")
        if [[ -d $copy ]]; then CORPUS_ARGS+=(--from "$copy"); fi
    fi
    if [[ -z $SST2 && -f $SHARED_DATA/sst2/train.tsv ]]; then SST2=$SHARED_DATA/sst2; fi
    IMDB_DIR=""
    if [[ -f $SHARED_DATA/imdb/test_pos.txt.gz ]]; then IMDB_DIR=$SHARED_DATA/imdb; fi
    # shellcheck disable=SC2206  # lists of task names
    TASKS=(SST-2 ${EXTRA_TASKS^^} $GLUE_TASKS)
}

check_inputs() {
    check_tools fairseq-validate
    [[ -z $TEXT || -e $TEXT ]] || usage_error "--text $TEXT: no such file or folder"
    [[ $CORPUS =~ ^(imdb|captions)$ ]] || usage_error "--corpus $CORPUS: expected imdb or captions"
    [[ -z $SST2 || -d $SST2 ]] || usage_error "--sst2 $SST2: no such folder"
    [[ $GRID =~ ^(full|quick|speed|tiny)$ ]] || usage_error "--grid $GRID: expected full, quick, speed or tiny"
    [[ $EPOCHS =~ ^[1-9][0-9]*$ ]] || usage_error "--epochs $EPOCHS: expected a whole number > 0"
    [[ $SEEDS =~ ^[1-9][0-9]*$ ]] || usage_error "--seeds $SEEDS: expected a whole number > 0"
    [[ $TASK_TEXT =~ ^[0-9]+$ ]] || usage_error "--task-text $TASK_TEXT: expected a whole number >= 0"
    [[ $BUDGET =~ ^[0-9]*\.?[0-9]+$ ]] || usage_error "--budget $BUDGET: expected minutes > 0"
    local task
    # shellcheck disable=SC2086  # a list of sizes
    check_archs roberta_ $ARCHS
    for task in $EXTRA_TASKS; do
        [[ ${task^^} == IMDB ]] || usage_error "--tasks: $task is not imdb (SST-2 always runs; GLUE tasks: --glue-tasks)"
    done
    if [[ -n $GLUE_TASKS ]]; then
        [[ -n $GLUE_DIR ]] || usage_error "--glue-tasks needs --glue-dir"
        for task in $GLUE_TASKS; do
            [[ $task =~ ^(MNLI|QNLI|RTE|MRPC|QQP)$ ]] || usage_error "--glue-tasks: $task is not one of MNLI QNLI RTE MRPC QQP"
            [[ -d $GLUE_DIR/$task ]] || die "--glue-dir $GLUE_DIR: no $task folder in it"
        done
    fi
}

# task_source TASK: the folder with TASK's files (none: SST-2 and IMDB are downloaded).
task_source() {
    case $1 in
        SST-2) echo "$SST2" ;;
        IMDB) echo "$IMDB_DIR" ;;
        *) echo "$GLUE_DIR/$1" ;;
    esac
}

# The tasks' training sentences go into the pretraining text, --task-text times (task-adaptive pretraining,
# Gururangan et al. 2020): image captions alone share too few words with movie reviews for masked-LM pretraining to
# help SST-2, and once they were 7% of the text, too little to shape the model.
prepare() {
    local task from add=()
    if ((TASK_TEXT)); then
        for task in "${TASKS[@]}"; do
            # IMDB's training reviews are the default corpus already (its test reviews never go in).
            [[ $task != IMDB ]] || continue
            from=$(task_source "$task")
            "$PY" "$REPO/scripts/prepare_glue.py" --task "$task" ${from:+--from "$from"} \
                --sentences "$OUT/task_text/$task.txt" "${GLUE_ARGS[@]}"
            add+=(--add "$OUT/task_text/$task.txt")
        done
        add+=(--add-repeat "$TASK_TEXT")
    fi
    "$PY" "$REPO/scripts/prepare_mono.py" --out "$OUT/mono" ${TEXT:+--from "$TEXT"} "${CORPUS_ARGS[@]}" "${add[@]}" \
        "${MONO_ARGS[@]}"
    for task in "${TASKS[@]}"; do
        from=$(task_source "$task")
        "$PY" "$REPO/scripts/prepare_glue.py" --task "$task" ${from:+--from "$from"} --spm "$OUT/mono/spm.model" \
            --dict "$OUT/mono/bin/dict.txt" --out "$OUT/$task/data" "${GLUE_ARGS[@]}"
    done
}

# One sentence per sample (--sample-break-mode eos): with 128-token blocks of several unrelated sentences, a small
# model spent a whole CPU budget at the loss of word frequencies before it learned where its context is; one
# sentence per sample is also what fine-tuning feeds it. No dropout: a few minutes of pretraining underfit.
pretrain() {
    local archs=() size valid_every=100 log_every=5 workers=0
    if [[ $DEVICE == gpu ]]; then valid_every=500 log_every=50 workers=1; fi
    for size in $ARCHS; do archs+=("roberta_$size"); done
    local args=(
        "$OUT/mono/bin" --user-dir "$REPO/fairseq_ext" --task compressed_masked_lm --criterion masked_lm_accuracy
        --sample-break-mode eos --tokens-per-sample 128 --max-positions 128 --shorten-method truncate
        --optimizer adam --adam-betas "(0.9, 0.98)" --adam-eps 1e-6 --weight-decay 0.01 --clip-norm 1.0
        --lr 2e-3 --lr-scheduler inverse_sqrt --warmup-updates 150 --warmup-init-lr 1e-7
        --dropout 0 --attention-dropout 0 --max-tokens 4096 --seed 1 --num-workers "$workers"
        --validate-interval-updates "$valid_every" --log-interval "$log_every" --no-epoch-checkpoints
        "${TRAIN_DEVICE_ARGS[@]}"
    )
    # shellcheck disable=SC2206  # --train-args is a list of words on purpose
    args+=($TRAIN_EXTRA)
    train_grid "$OUT" "$(seconds "$BUDGET")" "${archs[@]}" -- "${args[@]}"
}

# finetune TASK: every pretrained size on TASK for EPOCHS epochs (the tiny mode: 4 updates) with every seed, seed 1
# in OUT/TASK/finetune/<size>/ (what the sweep compresses), seed k in OUT/TASK/finetune-seed<k>/<size>/; then the
# control: the best pretrained size from random weights with every seed (OUT/TASK/scratch/<size>/,
# OUT/TASK/scratch-seed<k>/<size>/). The best size is the one with the lowest masked-LM validation loss, not the best
# dev accuracy: picked by its score on the dev set, it would carry its seeds' luck into the comparison.
finetune() {
    local task=$1 size best seed keep=()
    for ((seed = 1; seed <= SEEDS; seed++)); do
        # Only seed 1's checkpoints are swept: the others keep none.
        if ((seed > 1)); then keep=(--no-save); fi
        for size in $ARCHS; do
            finetune_one "$task" "$size" "$seed" "$OUT/$task/$(seed_folder finetune "$seed")/$size" \
                "$task $size pretrained, seed $seed/$SEEDS" \
                --finetune-from-model "$OUT/train/$size/checkpoint_last.pt" "${keep[@]}"
        done
    done
    best=$(best_pretrained "$OUT/train")
    for ((seed = 1; seed <= SEEDS; seed++)); do
        finetune_one "$task" "$best" "$seed" "$OUT/$task/$(seed_folder scratch "$seed")/$best" \
            "$task control: $best from random weights, seed $seed/$SEEDS" --no-save
    done
}

# seed_folder NAME SEED: NAME for seed 1, NAME-seed<SEED> for the others (as fairseq_ext/analysis/control.py reads).
seed_folder() { if (($2 == 1)); then echo "$1"; else echo "$1-seed$2"; fi; }

# best_pretrained DIR: the size whose pretraining ended with the lowest masked-LM validation loss (DIR/*/meta.json).
best_pretrained() {
    "$PY" - "$1" <<'EOF'
import json, pathlib, sys
metas = [json.loads(p.read_text()) for p in sorted(pathlib.Path(sys.argv[1]).glob("*/meta.json"))]
print(min(metas, key=lambda m: m["valid_loss"] if m.get("valid_loss") is not None else float("inf"))["name"])
EOF
}

# finetune_one TASK SIZE SEED SAVE_DIR LABEL [ARGS...]: one fine-tuning run of roberta_SIZE with SEED; ARGS say where
# it starts (--finetune-from-model CHECKPOINT; nothing for random weights), and more fairseq-train options.
# The task is compressed_sentence_prediction with no compression flags, i.e. the stock task: fairseq-validate takes
# the task config from the checkpoint, and only this one has the --prune-*/--quant-* keys the sweep overrides.
finetune_one() {
    local task=$1 size=$2 seed=$3 save_dir=$4 label=$5 data=$OUT/$1/data/bin
    shift 5
    local examples classes updates
    examples=$(wc -l <"$OUT/$task/data/bpe/train.label")
    # fairseq-preprocess pads the label dictionary with madeupwordNNNN entries: they are no classes.
    classes=$(grep -vc '^madeupword' "$data/label/dict.txt")
    updates=$(((examples + 31) / 32 * EPOCHS))
    local stop=(--max-epoch "$EPOCHS")
    if ((TINY)); then updates=4 stop=(--max-update 4); fi
    "$PY" "$LIB/train_budget.py" --save-dir "$save_dir" --arch "roberta_$size" --budget-s 0 \
        --label "$label" -- "$data" --user-dir "$REPO/fairseq_ext" "$@" \
        --task compressed_sentence_prediction --criterion sentence_prediction --num-classes "$classes" \
        --init-token 0 --separator-token 2 --max-positions 128 --shorten-method truncate \
        --batch-size 32 "${stop[@]}" --optimizer adam --adam-betas "(0.9, 0.98)" --adam-eps 1e-6 \
        --weight-decay 0.1 --clip-norm 0.0 --lr 5e-4 --lr-scheduler polynomial_decay \
        --total-num-update "$updates" --warmup-updates $((updates * 6 / 100)) \
        --dropout 0.1 --attention-dropout 0.1 --find-unused-parameters \
        --best-checkpoint-metric accuracy --maximize-best-checkpoint-metric --no-epoch-checkpoints \
        --seed "$seed" --num-workers 0 --log-interval 10 "${TRAIN_DEVICE_ARGS[@]}"
}

# fairseq drops a last batch whose size is not a multiple of --required-batch-size-multiple (8 by default), so 1
# scores every dev example.
sweep() {
    local task=$1 checkpoints=() size
    for size in $ARCHS; do checkpoints+=("$size=$OUT/$task/finetune/$size/checkpoint_last.pt"); done
    parallel_sweep "$OUT/$task" --data "$OUT/$task/data/bin" --task sentence_prediction --subset valid \
        --grid "$GRID" --generate-args "--required-batch-size-multiple 1" \
        -- "${checkpoints[@]}"
}

# report TASK: the task's folder holds its sweep; train/ links to the pretraining runs, whose convergence it shows.
report() {
    local task=$1
    ln -sfn ../train "$OUT/$task/train"
    "$PY" "$REPO/scripts/analyze.py" report --run "$OUT/$task" >/dev/null
    say "$task:"
    "$PY" "$LIB/summary.py" "$OUT/$task"
    say "report: $OUT/$task/report/report.md"
}

main() {
    parse_args "$@"
    check_inputs
    detect_device
    settings_guard "$OUT" "tiny=$TINY" "archs=$ARCHS" "budget_min=$BUDGET" "epochs=$EPOCHS" "seeds=$SEEDS" \
        "train_args=$TRAIN_EXTRA" "device=$DEVICE" "text=${TEXT:-$CORPUS}" "task_text=$TASK_TEXT"
    local task
    step 1 5 "data: pretraining text and ${TASKS[*]}"
    prepare
    step 2 5 "pretraining $(count_models "$ARCHS") for $BUDGET min each"
    pretrain
    step 3 5 "fine-tuning on ${TASKS[*]}"
    for task in "${TASKS[@]}"; do finetune "$task"; done
    step 4 5 "compression sweep ($GRID grid, dev accuracy)"
    for task in "${TASKS[@]}"; do sweep "$task"; done
    step 5 5 "report"
    for task in "${TASKS[@]}"; do report "$task"; done
}

main "$@"
