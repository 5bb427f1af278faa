#!/usr/bin/env python
"""Decoding speed of fairseq-generate on Multi30k test: fp32 vs real int8 vs structured-pruned (vs CTranslate2).

For every --archs model (default: transformer_wmt_en_fr_d6_h1024, the 6+6 d=1024 transformer_vaswani_wmt_en_fr_big
shape with shared embeddings; with the default --vocab 40000 it holds 217M parameters) this script

1. builds the model with fairseq (the same build as fairseq-train: options -> task -> build_model) and saves the
   untrained, randomly initialised weights as a fairseq checkpoint (random weights are fine: every variant decodes
   exactly --len tokens, so the work per sentence is fixed);
2. makes a bench data folder: the Multi30k dictionaries padded with filler symbols to --vocab entries (the real
   tokens keep their ids) and the first --sentences pairs of the binarized test set;
3. runs the real ``fairseq-generate`` once per variant and round, alternating the variants within every round
   (their order rotates from round to round) so that they share whatever else the machine is doing, with
   beam 4, batch 32 (--batch-size 32), --max-len-a 0 --max-len-b LEN --min-len LEN, and reads fairseq's own
   ``Translated N sentences (T tokens) in S s`` line (generation time only: no start-up, no checkpoint load,
   no int8 conversion);
4. prints tokens/s per variant and round, and per round the RATIO to the fp32 run of the same round (and to int8),
   with the median over rounds, and the memory: the bytes compression accounts (the packed file), those of the
   weights as they run (the plugin's runtime_mb: every distinct tensor storage) and the peak RSS of the whole
   fairseq-generate process (from os.wait4). Ratios are what to compare on a shared machine; absolute tokens/s move
   with the load.

Variants (--variants, comma-separated):

    fp32         stock fairseq: --task translation, float32, fairseq's SequenceGenerator
    lean         --task compressed_translation: float32, the plugin's lean beam-aware decoder
    int8         --task compressed_translation --int8-kernels        (real int8 Linear kernels, lean decoder)
    int8_stock   the same with --stock-generator (fairseq's SequenceGenerator)
    pruned       --task compressed_translation --prune-heads H --prune-ffn F   (smaller matrices, fp32, lean)
    pruned_int8  both
    sim4         --task compressed_translation --quant-bits 4 --quant-granularity group --quant-group-size G
                 (simulated 4-bit: float32 weights on the 4-bit grid, lean decoder)
    int4         the same with --int4-kernels (torch's CPU int4 kernels on the same codes)
    int4_packed  --int4-kernels on the checkpoint packed at that grid (scripts/pack_checkpoint.py, made once): the
                 model is built straight into int4 modules, never in float32
    ct2_fp32, ct2_int8   CTranslate2 on the same checkpoint (ct2-fairseq-converter, --quantization int8), only
                 when the ``ctranslate2`` package can be imported (it is NOT a dependency of this repo:
                 ``pip install --target DIR ctranslate2`` and PYTHONPATH=DIR is enough); same beam, batch,
                 lengths and threads. Tokens are counted as fairseq counts them (the LEN tokens + </s>).

Threads: --threads N sets OMP_NUM_THREADS for fairseq and intra_threads for CTranslate2 (default 1: on a
machine shared with other jobs, a 2-thread run of any engine mostly measures how long its threads wait for
each other).

    .venv/bin/python scripts/bench_generate.py                       # d6_h1024, every variant (+ct2)
    .venv/bin/python scripts/bench_generate.py --archs transformer_wmt_en_fr_d2_h256,transformer_wmt_en_fr_d6_h512
    .venv/bin/python scripts/bench_generate.py --quick               # smoke test: tiny model, 1 round, seconds
"""

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from fairseq_ext.bench_models import log, make_bench_data, make_checkpoint, prepare_multi30k, run, run_with_peak
from fairseq_ext.benchmarks import (
    CT2_VARIANTS,
    FAIRSEQ_VARIANTS,
    PACKED_VARIANTS,
    PLUGIN_DIR,
    four_bit_flags,
    generate_command,
    memory_figures,
    parse_translated,
    summarize,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("FAIRSEQ_EXT_DATA", REPO.parent / "shared" / "data")) / "multi30k"
MAIN_ARCH = "transformer_wmt_en_fr_d6_h1024"


def ct2_available():
    import importlib.util

    return importlib.util.find_spec("ctranslate2") is not None


# ---------------------------------------------------------------------------------------------- the runs


def fairseq_run(variant, data, checkpoint, args):
    cmd = generate_command(variant, data, checkpoint, beam=args.beam, batch_size=args.batch_size, length=args.len,
                           prune_heads=args.prune_heads, prune_ffn=args.prune_ffn, group_size=args.group_size)
    output, peak_rss_mb = run_with_peak(cmd, args.threads)
    try:
        return {**parse_translated(output, args.len), **memory_figures(output), "peak_rss_mb": round(peak_rss_mb, 1)}
    except ValueError as error:
        raise RuntimeError(f"{variant}: {error}:\n{output[-3000:]}") from None


def packed_checkpoint(checkpoint, data, args):
    """The checkpoint packed at the int4 variants' grid (scripts/pack_checkpoint.py), made once."""
    path = checkpoint.with_name(f"{checkpoint.stem}_q4g{args.group_size}.fxc")
    if not path.is_file():
        run([sys.executable, "scripts/pack_checkpoint.py", checkpoint, "--data", data, "--out", path,
             *four_bit_flags(args.group_size)], threads=2)
    return path


CT2_SNIPPET = r"""
import json, sys, time
import ctranslate2
from fairseq.data import Dictionary, data_utils
model_dir, data, beam, batch, length, threads = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
src_dict = Dictionary.load(f"{data}/dict.en.txt")
dataset = data_utils.load_indexed_dataset(f"{data}/test.en-fr.en", src_dict)
# fairseq appends </s> to every source sentence; CTranslate2 adds it itself (add_source_eos).
sources = [[src_dict[int(i)] for i in dataset[k][:-1]] for k in range(len(dataset))]
translator = ctranslate2.Translator(model_dir, device="cpu", intra_threads=threads, inter_threads=1)
start = time.perf_counter()
results = translator.translate_batch(sources, beam_size=beam, max_batch_size=batch, batch_type="examples",
                                     min_decoding_length=length, max_decoding_length=length)
seconds = time.perf_counter() - start
lengths = sorted({len(r.hypotheses[0]) for r in results})
print("CT2RESULT " + json.dumps({"sentences": len(results), "lengths": lengths, "seconds": seconds}))
"""


def ct2_convert(checkpoint, data, out, quantization):
    if (out / "model.bin").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    run([sys.executable, "-m", "ctranslate2.converters.fairseq", "--model_path", checkpoint, "--data_dir", data,
         "--user_dir", PLUGIN_DIR, "--output_dir", out, "--quantization", quantization], threads=2)
    return out


def ct2_run(model_dir, data, args):
    output = run([sys.executable, "-c", CT2_SNIPPET, model_dir, data, args.beam, args.batch_size, args.len,
                  args.threads], args.threads)
    result = json.loads(output.split("CT2RESULT ", 1)[1].splitlines()[0])
    if result["lengths"] != [args.len]:
        raise RuntimeError(f"CTranslate2 produced lengths {result['lengths']}, expected {args.len} tokens")
    # counted like fairseq: the LEN tokens + </s>
    return {"sentences": result["sentences"], "tokens": result["sentences"] * (args.len + 1),
            "seconds": result["seconds"]}


def bench_arch(arch, multi30k_bin, args):
    data = make_bench_data(multi30k_bin, args.work / f"data_v{args.vocab}_n{args.sentences}", args.vocab,
                           args.sentences)
    checkpoint = make_checkpoint(arch, data, args.work / "checkpoints" / f"{arch}_v{args.vocab}.pt", args.arch_args)
    variants = list(args.variants)
    ct2_dirs = {}
    for variant in [v for v in variants if v in CT2_VARIANTS]:
        quantization = variant.split("_", 1)[1].replace("fp32", "float32")
        try:
            ct2_dirs[variant] = ct2_convert(checkpoint, data, args.work / "ct2" / f"{arch}_v{args.vocab}_{quantization}",
                                            quantization)
        except RuntimeError as error:
            log(f"bench: {variant} left out, the CTranslate2 converter failed on this checkpoint:\n{error}")
            variants.remove(variant)
    rounds = []
    for r in range(args.rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]  # rotate: no variant always first
        results = {}
        for variant in order:
            if variant in CT2_VARIANTS:
                results[variant] = ct2_run(ct2_dirs[variant], data, args)
            else:
                source = packed_checkpoint(checkpoint, data, args) if variant in PACKED_VARIANTS else checkpoint
                results[variant] = fairseq_run(variant, data, source, args)
            if "tokens_per_s" not in results[variant]:  # CTranslate2's run: its own timer
                results[variant]["tokens_per_s"] = results[variant]["tokens"] / results[variant]["seconds"]
            log(f"bench: {arch} round {r + 1}/{args.rounds} {variant:12s} "
                f"{results[variant]['tokens_per_s']:8.1f} tokens/s")
        rounds.append(results)
    return {"arch": arch, "checkpoint": str(checkpoint), "variants": variants, "rounds": rounds}


def print_table(rows, args):
    print(f"\nfairseq-generate on the first {args.sentences} Multi30k test sentences, beam {args.beam}, "
          f"batch {args.batch_size}, {args.len} tokens + </s> per sentence, {args.threads} thread(s), "
          f"{args.rounds} alternated round(s)")
    print("| arch | variant | tokens/s per round | ratio to fp32 per round | median ratio | median ratio to int8 | "
          "median ratio to ct2_int8 | accounted MB | runtime MB | peak RSS MB (median) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['arch']} | {row['variant']} | {', '.join(map(str, row['tokens_per_s']))} | "
              f"{', '.join(map(str, row['ratio_to_fp32'])) or '-'} | {row['median_ratio'] or '-'} | "
              f"{row['median_ratio_to_int8'] or '-'} | {row['median_ratio_to_ct2_int8'] or '-'} | "
              f"{row['accounted_mb'] or '-'} | {row['runtime_mb'] or '-'} | {row['peak_rss_mb'] or '-'} |")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default=MAIN_ARCH, help=f"comma-separated fairseq archs (default {MAIN_ARCH})")
    parser.add_argument("--variants", default=",".join(FAIRSEQ_VARIANTS + CT2_VARIANTS),
                        help="comma-separated, of: " + ", ".join(FAIRSEQ_VARIANTS + CT2_VARIANTS) +
                             " (ct2_* are skipped when ctranslate2 is not installed)")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds (default 3)")
    parser.add_argument("--sentences", type=int, default=64, help="first N Multi30k test sentences (default 64)")
    parser.add_argument("--vocab", type=int, default=40000, help="dictionary size of the benchmarked models")
    parser.add_argument("--len", type=int, default=30, help="tokens generated per sentence (default 30)")
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS / CTranslate2 intra_threads")
    parser.add_argument("--prune-heads", default="0.5", help="--prune-heads of the pruned variants (default 0.5)")
    parser.add_argument("--prune-ffn", default="0.5", help="--prune-ffn of the pruned variants (default 0.5)")
    parser.add_argument("--group-size", default="128", help="--quant-group-size of the sim4 / int4 variants "
                                                            "(default 128)")
    parser.add_argument("--data-from", type=Path, default=DEFAULT_DATA, help="raw Multi30k folder")
    parser.add_argument("--data-bin", type=Path,
                        help="an already binarized Multi30k (prepare_multi30k.py's DIR/bin) instead of --data-from")
    parser.add_argument("--work", type=Path, help="cache of data, checkpoints and CTranslate2 models "
                                                   "(default runs/bench_generate[_quick])")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: transformer_wmt_en_fr_d2_h256, 4k vocab, 16 sentences, batch 8, 8 tokens, 1 round")
    args = parser.parse_args(argv)
    args.arch_args = []
    args.work = args.work or REPO / "runs" / ("bench_generate_quick" if args.quick else "bench_generate")
    if args.quick:
        args.archs = "transformer_wmt_en_fr_d2_h256"
        args.sentences, args.len, args.rounds, args.vocab, args.batch_size = 16, 8, 1, 4000, 8
    args.archs = [a for a in args.archs.split(",") if a]
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in args.variants if v not in FAIRSEQ_VARIANTS + CT2_VARIANTS]
    if unknown:
        parser.error(f"unknown --variants {', '.join(unknown)}; allowed: {', '.join(FAIRSEQ_VARIANTS + CT2_VARIANTS)}")
    if not ct2_available() and any(v in CT2_VARIANTS for v in args.variants):
        log("bench: ctranslate2 is not installed: ct2_* variants skipped")
        args.variants = [v for v in args.variants if v not in CT2_VARIANTS]
    if not args.variants:
        parser.error("no variant to run")
    return args


def quiet():
    """Keep fairseq/hydra's start-up chatter of the in-process checkpoint build out of the report."""
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.getLogger().setLevel(logging.WARNING)
    for name in ("fairseq", "hydra"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv=None):
    args = parse_args(argv)
    quiet()
    args.work.mkdir(parents=True, exist_ok=True)
    multi30k_bin = args.data_bin or prepare_multi30k(args.work, args.data_from, args.quick)
    started = time.time()
    results = [bench_arch(arch, multi30k_bin, args) for arch in args.archs]
    rows = [row for result in results for row in summarize(result)]
    print_table(rows, args)
    print(f"({time.time() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()},
                                         "results": results, "summary": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
