#!/usr/bin/env bash
# WMT14 En-Fr at the paper's scale: data as fairseq's prepare-wmt14en2fr.sh, grid archs for one wall-clock budget
# each with the paper's optimizer settings (multi-GPU / multi-node via fairseq's distributed training),
# detokenized sacrebleu on newstest2014, the compression sweep and the report.
set -euo pipefail
RECIPE=wmt14_en_fr
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

usage() {
    cat <<'EOF'
usage: recipes/wmt14_en_fr/run.sh [options]

stages (all by default, in this order; a finished stage or model is skipped when run again):
  prepare   download (or --from) the WMT14 archives, clean, 40k joint sentencepiece BPE, binarize
  train     every --archs model for the same wall-clock --budget (fairseq's --stop-time-hours)
  eval      newstest2014 with fairseq-generate, detokenized sacrebleu against the raw reference (signature shown)
  sweep     every checkpoint under pruning / quantization (scripts/sweep.py), BLEU on newstest2014
  report    scripts/analyze.py report: convergence vs time and updates, the compression frontier, budgets

options:
  --out DIR            everything goes here (default: runs/wmt14_en_fr)
  --from DIR           a local mirror of the archives, by fairseq's names: training-parallel-europarl-v7.tgz,
                       training-parallel-commoncrawl.tgz, training-parallel-un.tgz, training-parallel-nc-v9.tgz,
                       training-giga-fren.tar, dev.tgz, test-full.tgz (default: download from statmt.org)
  --stage NAME         run only this stage (repeatable)
  --archs "LIST"       sizes of transformer_wmt_en_fr_<size> (default: "d6_h1024", i.e. Transformer big)
  --budget HOURS       wall-clock training time per model (default: 24)
  --max-tokens N       tokens per GPU per step (default: 3584)
  --update-freq N      steps accumulated per update (default: 16; 8 GPUs x 3584 x 16 = ~460k tokens per update)
  --lr LR              peak learning rate after --warmup updates (default: 7e-4), then inverse-sqrt decay
  --warmup N           warm-up updates (default: 4000)
  --vocab-size N       sentencepiece BPE size (default: 40000)
  --grid NAME          compression grid of the sweep: full, quick, speed, tiny (default: full)
  --train-args "A"     more fairseq-train options, last so they win (e.g. "--dropout 0.3 --max-update 300000")
  --cpu                train on the CPU even where a GPU is (on GPUs: fp16 mixed precision)
  --tiny               smoke test: 2k-piece BPE, one d2_h256 model for a few seconds, tiny sweep
 distributed training (fairseq's own; all ranks must see --out on a shared file system):
  --launcher NAME      local (default: fairseq spawns one process per visible GPU), torchrun or slurm
  --nnodes N           torchrun/slurm: nodes (default 1)
  --gpus-per-node N    torchrun/slurm: processes per node (default: GPUs visible here)
  --node-rank R        torchrun: this node's rank; run the same command on every node, R = 0..N-1
  --master-addr HOST   torchrun: node 0's address (default: localhost)
  --master-port PORT   torchrun/slurm: rendezvous port (default: 29500)
  -h, --help           this text

Training settings (every size the same): Adam (0.9, 0.98), inverse-sqrt lr with warm-up, label smoothing 0.1,
dropout 0.1, pre-norm (--encoder/--decoder-normalize-before), shared embeddings, fp16 on GPUs. See
recipes/wmt14_en_fr/README.md for multi-node examples.
EOF
}

OUT="" FROM="" STAGES=() ARCHS="" BUDGET="" MAX_TOKENS="" UPDATE_FREQ="" LR="" WARMUP="" VOCAB="" GRID=""
TRAIN_EXTRA="" TINY=0 LAUNCHER=local NNODES=1 GPUS_PER_NODE="" NODE_RANK=0
MASTER_ADDR=localhost MASTER_PORT=29500

parse_args() {
    while (($#)); do
        case $1 in
            --out) need_value "$@"; OUT=$2; shift ;;
            --from) need_value "$@"; FROM=$2; shift ;;
            --stage) need_value "$@"; STAGES+=("$2"); shift ;;
            --archs) need_value "$@"; ARCHS=$2; shift ;;
            --budget) need_value "$@"; BUDGET=$2; shift ;;
            --max-tokens) need_value "$@"; MAX_TOKENS=$2; shift ;;
            --update-freq) need_value "$@"; UPDATE_FREQ=$2; shift ;;
            --lr) need_value "$@"; LR=$2; shift ;;
            --warmup) need_value "$@"; WARMUP=$2; shift ;;
            --vocab-size) need_value "$@"; VOCAB=$2; shift ;;
            --grid) need_value "$@"; GRID=$2; shift ;;
            --train-args) need_value "$@"; TRAIN_EXTRA=$2; shift ;;
            --cpu) FORCE_CPU=1 ;;
            --tiny) TINY=1 ;;
            --launcher) need_value "$@"; LAUNCHER=$2; shift ;;
            --nnodes) need_value "$@"; NNODES=$2; shift ;;
            --gpus-per-node) need_value "$@"; GPUS_PER_NODE=$2; shift ;;
            --node-rank) need_value "$@"; NODE_RANK=$2; shift ;;
            --master-addr) need_value "$@"; MASTER_ADDR=$2; shift ;;
            --master-port) need_value "$@"; MASTER_PORT=$2; shift ;;
            -h | --help) usage; exit 0 ;;
            *) usage_error "unknown option $1" ;;
        esac
        shift
    done
    # Options given win over the mode's defaults.
    PREPARE_ARGS=() LOG_INTERVAL=100 GEN_ARGS=()
    if ((TINY)); then
        # Seconds of everything, on CPU-sized settings: for the end-to-end test on a tiny mirror.
        ARCHS=${ARCHS:-d2_h256} BUDGET=${BUDGET:-0.0015} MAX_TOKENS=${MAX_TOKENS:-2048} UPDATE_FREQ=${UPDATE_FREQ:-1}
        LR=${LR:-1e-3} WARMUP=${WARMUP:-10} VOCAB=${VOCAB:-2000} GRID=${GRID:-tiny} OUT=${OUT:-$REPO/runs/wmt14_en_fr-tiny}
        PREPARE_ARGS=(--workers 2 --spm-sample 100000) LOG_INTERVAL=1
        # Seconds-old models decode to the length limit, slowly: the smoke test needs a score, not a good one.
        GEN_ARGS=(--max-len-a 0 --max-len-b 8)
    fi
    ARCHS=${ARCHS:-d6_h1024} BUDGET=${BUDGET:-24} MAX_TOKENS=${MAX_TOKENS:-3584} UPDATE_FREQ=${UPDATE_FREQ:-16}
    LR=${LR:-7e-4} WARMUP=${WARMUP:-4000} VOCAB=${VOCAB:-40000} GRID=${GRID:-full} OUT=${OUT:-$REPO/runs/wmt14_en_fr}
    ((${#STAGES[@]})) || STAGES=(prepare train eval sweep report)
}

check_inputs() {
    check_tools fairseq-generate sacrebleu
    [[ -z $FROM || -d $FROM ]] || usage_error "--from $FROM: no such folder"
    local stage
    for stage in "${STAGES[@]}"; do
        [[ $stage =~ ^(prepare|train|eval|sweep|report)$ ]] || usage_error "--stage $stage: expected prepare, train, eval, sweep or report"
    done
    [[ $LAUNCHER =~ ^(local|torchrun|slurm)$ ]] || usage_error "--launcher $LAUNCHER: expected local, torchrun or slurm"
    [[ $GRID =~ ^(full|quick|speed|tiny)$ ]] || usage_error "--grid $GRID: expected full, quick, speed or tiny"
    [[ $BUDGET =~ ^[0-9]*\.?[0-9]+$ ]] || usage_error "--budget $BUDGET: expected hours > 0"
    # shellcheck disable=SC2086  # a list of sizes
    check_archs transformer_wmt_en_fr_ $ARCHS
    if [[ $LAUNCHER == slurm ]]; then
        [[ -n ${SLURM_JOB_ID:-} ]] || die "--launcher slurm: not inside a SLURM allocation (run this script from sbatch/salloc)"
        command -v srun >/dev/null || die "--launcher slurm: srun not found"
    fi
}

wants() { [[ " ${STAGES[*]} " == *" $1 "* ]]; }

prepare() {
    "$PY" "$REPO/scripts/prepare_wmt14_en_fr.py" --out "$OUT/data" ${FROM:+--from "$FROM"} --vocab-size "$VOCAB" \
        "${PREPARE_ARGS[@]}"
}

need_data() { [[ -f $OUT/data/bin/dict.en.txt ]] || die "no prepared data in $OUT/data/bin: run --stage prepare first"; }

# LAUNCH: what goes before fairseq-train; DIST_ARGS: what fairseq-train needs to find its ranks.
set_launcher() {
    local gpus=${GPUS_PER_NODE:-$("$PY" -c 'import torch; print(max(1, torch.cuda.device_count()))')}
    local world=$((NNODES * gpus))
    LAUNCH="" DIST_ARGS=()
    case $LAUNCHER in
        # fairseq-train spawns one process per visible GPU by itself.
        local) ;;
        # torchrun sets MASTER_ADDR/PORT, WORLD_SIZE and RANK, from which fairseq takes the ranks (env://).
        torchrun)
            LAUNCH="$BIN/torchrun --nnodes $NNODES --nproc-per-node $gpus --node-rank $NODE_RANK"
            LAUNCH+=" --master-addr $MASTER_ADDR --master-port $MASTER_PORT"
            DIST_ARGS=(--distributed-world-size "$world") ;;
        # One srun task per GPU; fairseq reads SLURM_PROCID/LOCALID/NODELIST and needs the port.
        slurm)
            LAUNCH="srun --nodes $NNODES --ntasks-per-node $gpus"
            DIST_ARGS=(--distributed-world-size "$world" --distributed-port "$MASTER_PORT") ;;
    esac
}

train_models() {
    need_data
    set_launcher
    local archs=() size workers=1
    if [[ $DEVICE == cpu ]]; then workers=0; fi
    for size in $ARCHS; do archs+=("transformer_wmt_en_fr_$size"); done
    local args=(
        "$OUT/data/bin" --user-dir "$REPO/fairseq_ext" --task compressed_translation
        --encoder-normalize-before --decoder-normalize-before
        --optimizer adam --adam-betas "(0.9, 0.98)" --clip-norm 0.0 --weight-decay 0.0
        --lr "$LR" --lr-scheduler inverse_sqrt --warmup-updates "$WARMUP" --warmup-init-lr 1e-7
        --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --dropout 0.1
        --max-tokens "$MAX_TOKENS" --update-freq "$UPDATE_FREQ" --seed 1 --num-workers "$workers"
        --log-interval "$LOG_INTERVAL" --save-interval-updates 2000 --keep-interval-updates 1
        --no-epoch-checkpoints "${TRAIN_DEVICE_ARGS[@]}" "${DIST_ARGS[@]}"
    )
    # shellcheck disable=SC2206  # --train-args is a list of words on purpose
    args+=($TRAIN_EXTRA)
    train_grid "$OUT" "$(seconds "$(awk "BEGIN {print $BUDGET * 60}")")" "${archs[@]}" -- "${args[@]}"
}

evaluate() {
    need_data
    local size dir EVAL_DEVICE_ARGS=()
    if [[ $DEVICE == cpu ]]; then EVAL_DEVICE_ARGS=(--cpu); fi
    for size in $ARCHS; do
        dir=$OUT/eval/$size
        mkdir -p "$dir"
        if [[ ! -f $dir/bleu.txt ]]; then
            say "newstest2014: $size"
            "$BIN/fairseq-generate" "$OUT/data/bin" --user-dir "$REPO/fairseq_ext" --task translation \
                --path "$OUT/train/$size/checkpoint_last.pt" --gen-subset test --beam 4 --lenpen 0.6 \
                --max-tokens 8000 --required-batch-size-multiple 1 --post-process sentencepiece \
                "${GEN_ARGS[@]}" "${EVAL_DEVICE_ARGS[@]}" \
                >"$dir/generate.txt" 2>"$dir/generate.log" || die "fairseq-generate failed for $size: see $dir/generate.log"
            # Hypotheses back in test-set order (fairseq prints them by length), detokenized by sentencepiece.
            grep '^D-' "$dir/generate.txt" | sed 's/^D-//' | sort -t $'\t' -k1,1n | cut -f3 >"$dir/hyp.txt"
            [[ $(wc -l <"$dir/hyp.txt") == $(wc -l <"$OUT/data/text/test.fr") ]] ||
                die "fairseq-generate translated $(wc -l <"$dir/hyp.txt") of $(wc -l <"$OUT/data/text/test.fr") sentences: see $dir/generate.log"
            "$BIN/sacrebleu" "$OUT/data/text/test.fr" -i "$dir/hyp.txt" -m bleu -f text >"$dir/bleu.txt.tmp"
            mv "$dir/bleu.txt.tmp" "$dir/bleu.txt"
        fi
        say "$size newstest2014 detokenized: $(cat "$dir/bleu.txt")"
    done
}

sweep() {
    need_data
    local checkpoints=() size
    for size in $ARCHS; do checkpoints+=("$size=$OUT/train/$size/checkpoint_last.pt"); done
    parallel_sweep "$OUT" --data "$OUT/data/bin" --task translation --subset test --grid "$GRID" \
        --generate-args "--beam 4 --lenpen 0.6 --max-tokens 8000 --required-batch-size-multiple 1 ${GEN_ARGS[*]}" \
        -- "${checkpoints[@]}"
}

report() {
    "$PY" "$REPO/scripts/analyze.py" report --run "$OUT" >/dev/null
    "$PY" "$LIB/summary.py" "$OUT"
    say "report: $OUT/report/report.md"
}

main() {
    parse_args "$@"
    check_inputs
    detect_device
    settings_guard "$OUT" "archs=$ARCHS" "budget_h=$BUDGET" "max_tokens=$MAX_TOKENS" "update_freq=$UPDATE_FREQ" \
        "lr=$LR" "warmup=$WARMUP" "vocab=$VOCAB" "train_args=$TRAIN_EXTRA" "device=$DEVICE"
    local n=${#STAGES[@]} i=0 stage
    for stage in prepare train eval sweep report; do
        wants "$stage" || continue
        i=$((i + 1))
        step "$i" "$n" "$stage"
        case $stage in
            prepare) prepare ;;
            train) train_models ;;
            eval) evaluate ;;
            sweep) sweep ;;
            report) report ;;
        esac
    done
}

main "$@"
