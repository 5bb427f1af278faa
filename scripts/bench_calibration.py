#!/usr/bin/env python
"""Calibrated compressors (SparseGPT, GPTQ) against the paper's (magnitude, round-to-nearest), and calibration time.

Quality: on a trained translation checkpoint (make demo's d2_h256 by default), fairseq-generate scores each row's
two methods on every test sentence (beam 4, sacrebleu), as a share of the dense model's BLEU. Rows and targets:

    70% of the Linear weights pruned              SparseGPT >= 92% of dense
    80% of the Linear weights pruned              SparseGPT >= 75%
    2-bit Linear weights                          GPTQ >= 92%
    50% pruned + 4-bit Linear weights, jointly    SparseGPT+GPTQ >= 97%

and the quantized rows again with the default set (embeddings quantized too), beside them, without a target.
Pruning rows prune the Linear weights only, as the default set does.

Time: --timing builds the untrained 217M transformer_wmt_en_fr_d6_h1024 (40k joint vocabulary, as
bench_generate.py does) and times scripts/pack_checkpoint.py --quant-bits 4 --quant-method gptq on 128 Multi30k
sentences, the calibration passes and solves as the compressed line reports them and the whole command.
Target: <= 120 s.

    .venv/bin/python scripts/bench_calibration.py --run runs/multi30k_en_fr [--model d2_h256]
    .venv/bin/python scripts/bench_calibration.py --timing
Exits 1 when a target is missed.
"""
import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fairseq_ext.analysis.fairseq_output import compressed_figures, sacrebleu_score
from fairseq_ext.bench_models import log, make_bench_data, make_checkpoint, prepare_multi30k, run
from fairseq_ext.benchmarks import FAIRSEQ_GENERATE, PLUGIN_DIR

REPO = PLUGIN_DIR.parent
DEFAULT_DATA = Path(os.environ.get("FAIRSEQ_EXT_DATA", REPO.parent / "shared" / "data")) / "multi30k"
LINEAR_ONLY = ["--quant-skip-embeddings"]
SPARSEGPT = ["--prune-method", "sparsegpt"]
GPTQ = ["--quant-method", "gptq"]
GROUPS_64 = ["--quant-scheme", "asymmetric", "--quant-granularity", "group", "--quant-group-size", "64"]
# (row, weights, paper's flags, calibrated flags, target share of dense BLEU or None)
ROWS = [
    ("70% pruned", "Linear", ["--prune-sparsity", "0.7"], ["--prune-sparsity", "0.7", *SPARSEGPT], 0.92),
    ("80% pruned", "Linear", ["--prune-sparsity", "0.8"], ["--prune-sparsity", "0.8", *SPARSEGPT], 0.75),
    ("2-bit", "Linear", ["--quant-bits", "2", *LINEAR_ONLY], ["--quant-bits", "2", *LINEAR_ONLY, *GPTQ], 0.92),
    ("2-bit", "default set", ["--quant-bits", "2"], ["--quant-bits", "2", *GPTQ], None),
    ("2-bit, asymmetric groups of 64", "Linear", ["--quant-bits", "2", *LINEAR_ONLY, *GROUPS_64],
     ["--quant-bits", "2", *LINEAR_ONLY, *GROUPS_64, *GPTQ], None),
    ("50% pruned + 4-bit", "Linear", ["--prune-sparsity", "0.5", "--quant-bits", "4", *LINEAR_ONLY],
     ["--prune-sparsity", "0.5", "--quant-bits", "4", *LINEAR_ONLY, *SPARSEGPT, *GPTQ], 0.97),
    ("50% pruned + 4-bit", "default set", ["--prune-sparsity", "0.5", "--quant-bits", "4"],
     ["--prune-sparsity", "0.5", "--quant-bits", "4", *SPARSEGPT, *GPTQ], None),
]
TIME_TARGET_S = 120.0


def generate(data, checkpoint, flags, calib_samples):
    """(BLEU, the compressed line's figures) of one fairseq-generate run on every test sentence."""
    output = run([FAIRSEQ_GENERATE, data, "--user-dir", PLUGIN_DIR, "--task", "compressed_translation",
                  "--path", checkpoint, "--gen-subset", "test", "--beam", "4", "--max-tokens", "8000",
                  "--required-batch-size-multiple", "1", "--max-len-a", "1.2", "--max-len-b", "10", "--cpu",
                  "--quiet", "--scoring", "sacrebleu", "--post-process", "sentencepiece",
                  "--calib-samples", str(calib_samples), *flags], threads=1)
    return sacrebleu_score(output), compressed_figures(output)


def quality(args):
    checkpoint = args.run / "train" / args.model / "checkpoint_best.pt"
    data = args.run / "data" / "bin"
    for path in (checkpoint, data / "dict.en.txt"):
        if not path.exists():
            raise SystemExit(f"--run {args.run}: no {path.relative_to(args.run)} (run make demo, or pass the "
                             f"run folder of a translation recipe)")
    jobs = [[]] + [flags for row in ROWS for flags in row[2:4]]
    log(f"bench: {len(jobs)} fairseq-generate runs of {checkpoint}, two at a time")
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda flags: generate(data, checkpoint, flags, args.calib_samples), jobs))
    dense = results[0][0]
    print(f"{args.model}: dense BLEU {dense:.2f} (all test sentences, beam 4); calibration on {args.calib_samples} "
          f"training pairs")
    print("| row | weights | paper's method | calibrated | MB | target | met |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    missed = 0
    for i, (row, weights, _, _, target) in enumerate(ROWS):
        (paper, _), (calibrated, figures) = results[1 + 2 * i], results[2 + 2 * i]
        met = "" if target is None else ("yes" if calibrated >= target * dense else "NO")
        missed += met == "NO"
        seconds = figures.get("calibration", {}).get("seconds")
        print(f"| {row} | {weights} | {paper:.2f} ({paper / dense:.0%}) | {calibrated:.2f} ({calibrated / dense:.0%}, "
              f"calibrated in {seconds} s) | {figures['compressed_mb']} | "
              f"{'' if target is None else f'>= {target:.0%}'} | {met} |")
    return missed


def timing(args):
    work = Path(args.work)
    multi30k = prepare_multi30k(work, args.multi30k, quick=False)
    data = make_bench_data(multi30k, work / "bench_data_v40000_s128", 40000, 128)
    checkpoint = make_checkpoint("transformer_wmt_en_fr_d6_h1024", data, work / "checkpoints" / "d6_h1024_v40000.pt")
    with tempfile.TemporaryDirectory() as out:
        started = time.monotonic()
        output = run([sys.executable, "scripts/pack_checkpoint.py", checkpoint, "--data", data, "--out",
                      Path(out) / "model.fxc", "--quant-bits", "4", "--quant-method", "gptq", "--calib-subset", "test",
                      "--calib-samples", "128"], threads=args.threads)
        wall = time.monotonic() - started
    figures = json.loads(next(line for line in output.splitlines() if line.startswith("compressed "))[11:])
    seconds = figures["calibration"]["seconds"]
    met = seconds <= TIME_TARGET_S
    print(f"d6_h1024 ({figures['params'] / 1e6:.0f}M parameters), GPTQ 4-bit on 128 sentences, {args.threads} "
          f"thread(s): calibration {seconds:.1f} s ({figures['calibration']['stages']} stages, "
          f"{figures['calibration']['batches']} batches), whole pack_checkpoint.py {wall:.1f} s; "
          f"target <= {TIME_TARGET_S:.0f} s: {'met' if met else 'MISSED'}")
    return 0 if met else 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=REPO / "runs" / "multi30k_en_fr",
                        help="a translation recipe's run folder (default: make demo's, runs/multi30k_en_fr)")
    parser.add_argument("--model", default="d2_h256", help="the model of the run to compress (default d2_h256)")
    parser.add_argument("--calib-samples", type=int, default=128, help="calibration pairs (default 128)")
    parser.add_argument("--timing", action="store_true", help="time GPTQ on the untrained 217M model instead")
    parser.add_argument("--threads", type=int, default=2, help="--timing: OMP threads (default 2)")
    parser.add_argument("--work", default=str(REPO / "runs" / "bench"), help="--timing: cache of data and model")
    parser.add_argument("--multi30k", type=Path, default=DEFAULT_DATA, help="--timing: the Multi30k source folder")
    args = parser.parse_args(argv)
    missed = timing(args) if args.timing else quality(args)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
