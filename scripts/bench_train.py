#!/usr/bin/env python
"""Training throughput of fairseq-train: the grid archs against stock fairseq (CPU), words/s and MFU (GPU).

CPU mode (default): for every --archs grid point ``transformer_wmt_en_fr_d{D}_h{W}``, run the real fairseq-train
twice per round on Multi30k, alternating (the order flips every round):

    grid   fairseq-train --user-dir fairseq_ext --arch transformer_wmt_en_fr_dD_hW
    stock  fairseq-train --arch transformer_vaswani_wmt_en_fr_big --share-all-embeddings
                         --{encoder,decoder}-layers D --{encoder,decoder}-embed-dim W
                         --{encoder,decoder}-ffn-embed-dim 4W --{encoder,decoder}-attention-heads W/64
                         (no --user-dir: fairseq alone)

with identical data, seed, batches and settings, and checks that both built the same number of parameters.
--compare bf16 runs the grid arch twice per round instead, both through the plugin's compressed_translation task:

    fp32   fairseq-train --user-dir fairseq_ext --task compressed_translation --arch ...
    bf16   the same + --autocast-bf16 (forward and loss under CPU bf16 autocast, fp32 weights and Adam)

and the ratio printed is bf16 / fp32 (what AMX or AVX512-BF16 buys; the recipes turn it on where the CPU has them).
--concurrent runs the two of a round at the same time instead (each with --threads threads): on a machine shared
with other jobs, a load that changes between two consecutive runs skews an alternated ratio, while two runs side by
side see the same load.
Throughput is fairseq's own ``wps`` (target words per second) of its ``train_inner`` records, the first one
(warm-up) dropped, median of the rest. Printed: words/s of each run and, per round, the ratio grid / stock,
with the median over rounds; the plugin must cost nothing (ratio >= 0.98). Ratios are what to compare on a
shared machine; --threads (default 1) sets OMP_NUM_THREADS for both.

GPU mode (--device cuda): for every --archs grid point, words/s and model FLOPs utilisation (MFU) of
fairseq-train in bf16 (or --precision fp16), with settings chosen to raise MFU:

    --max-tokens 16384        big batches (per GPU); the stock reference used 8k
    --bf16                    bf16 weights/activations, fp32 master weights in fairseq's FP16Optimizer
                              (no loss scaling); --precision fp16 uses --fp16 (dynamic loss scaling, flattened
                              fp32 master weights). Stock fairseq turns --bf16 into --tpu (options.py) and then
                              fails without torch_xla; this script runs fairseq-train with that lifted
    fused Adam                fairseq picks a fused Adam only when apex is installed; otherwise it runs its own
                              Python Adam, one set of kernels per parameter tensor. This script runs fairseq-train
                              with fairseq's FairseqAdam backed by torch.optim.AdamW(fused=True) (the same
                              decoupled weight decay as fairseq's Adam; one multi-tensor kernel); --no-fused-adam
                              keeps fairseq's default
    attention kernel          fairseq's MultiheadAttention hands encoder and decoder self-attention to
                              F.multi_head_attention_forward, i.e. torch's scaled_dot_product_attention (fused
                              memory-efficient / flash kernels, need_weights=False). Encoder-decoder attention
                              (static_kv) takes fairseq's own bmm + softmax path.
    --num-workers 4, --required-batch-size-multiple 8, --disable-validation, --no-save, --log-interval 20

MFU = words/s x training FLOPs per target token / peak dense bf16/fp16 FLOP/s of the GPU. The FLOPs per token
are those scripts/arch_table.py prints (fairseq_ext/models/arch_description.py: 6 x non-embedding params + 6 x
output projection + attention 12 x A x n x d, with n = the measured mean target length per sentence, wpb / bsz). Peak: H100 SXM and H200 989 TFLOP/s, H100 PCIe 756,
A100 312 (dense, no sparsity), or --peak-tflops.

    .venv/bin/python scripts/bench_train.py                              # CPU: grid vs stock, ratios
    .venv/bin/python scripts/bench_train.py --compare bf16 --threads 2   # CPU: --autocast-bf16 vs fp32
    .venv/bin/python scripts/bench_train.py --device cuda --archs transformer_wmt_en_fr_d6_h1024,transformer_wmt_en_fr_d12_h2048
    .venv/bin/python scripts/bench_train.py --quick                      # smoke test (CPU, seconds)
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from fairseq_ext.benchmarks import (
    PAIRS,
    cpu_train_command,
    grid_shape,
    parse_train_output,
    train_model_args,
    train_settings,
    train_throughput,
)
from fairseq_ext.gpu_training import run_fairseq_train

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("FAIRSEQ_EXT_DATA", REPO.parent / "shared" / "data")) / "multi30k"
PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("GH200", 989.0), ("A100", 312.0)]


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ runs


def train_command(kind, arch, data, args):
    """fairseq-train of one run: on the CPU the real fairseq-train (fairseq_ext.benchmarks), on CUDA this script
    as fairseq-train with bf16 on CUDA and the fused AdamW (fairseq_ext.gpu_training)."""
    if args.device == "cpu":
        return cpu_train_command(kind, arch, data, args.max_tokens, args.max_update, args.log_interval)
    _, model = train_model_args(kind, arch)
    precision = ["--bf16"] if args.precision == "bf16" else ["--fp16"]
    gpu = [*precision, "--num-workers", "4", "--required-batch-size-multiple", "8"]
    launcher = "--as-fairseq-train-fused-adam" if args.fused_adam else "--as-fairseq-train"
    return [sys.executable, Path(__file__).resolve(), launcher, data, *model,
            *train_settings(args.max_tokens, args.max_update, args.log_interval), *gpu]


def child_env(args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCH_FORCE_")}
    env.update(PYTHONUNBUFFERED="1")
    if args.device == "cpu":
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads), CUDA_VISIBLE_DEVICES="")
    return env


def start_run(kind, arch, data, args):
    cmd = [str(c) for c in train_command(kind, arch, data, args)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=child_env(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    return kind, arch, cmd, proc


def finish_run(started):
    kind, arch, cmd, proc = started
    output, _ = proc.communicate(timeout=7200)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{output[-4000:]}")
    params, records = parse_train_output(output)
    try:
        throughput = train_throughput(records)
    except ValueError as error:
        raise RuntimeError(f"{kind} {arch}: {error} (raise --max-update):\n{output[-3000:]}") from None
    return {"params": params, **throughput}


def train_run(kind, arch, data, args):
    return finish_run(start_run(kind, arch, data, args))


# ------------------------------------------------------------------------------------------ CPU: grid vs stock


def bench_cpu(arch, data, args):
    first, second = PAIRS[args.compare]
    rounds = []
    for r in range(args.rounds):
        order = [first, second] if r % 2 == 0 else [second, first]
        result = {}
        if args.concurrent:  # both at once: whatever else the machine runs slows both alike
            started = [start_run(kind, arch, data, args) for kind in order]
            result = {kind: finish_run(run) for kind, run in zip(order, started)}
        for kind in order:
            result[kind] = result.get(kind) or train_run(kind, arch, data, args)
            log(f"bench: {arch} round {r + 1}/{args.rounds} {kind:5s} {result[kind]['wps']:9.1f} words/s")
        if result[first]["params"] != result[second]["params"]:
            raise RuntimeError(f"{arch}: {first} built {result[first]['params']} parameters, {second} "
                               f"{result[second]['params']}: not the same model")
        result["ratio"] = result[first]["wps"] / result[second]["wps"]
        rounds.append(result)
    ratios = [r["ratio"] for r in rounds]
    return {"arch": arch, "params": rounds[0][first]["params"], "rounds": rounds,
            f"{first}_wps": [round(r[first]["wps"], 1) for r in rounds],
            f"{second}_wps": [round(r[second]["wps"], 1) for r in rounds],
            "ratios": [round(x, 3) for x in ratios], "median_ratio": round(statistics.median(ratios), 3)}


def print_cpu_table(rows, args):
    first, second = PAIRS[args.compare]
    how = f"concurrent ({first} and {second} at the same time)" if args.concurrent else "alternated"
    print(f"\nfairseq-train words/s on Multi30k, CPU, {args.threads} thread(s) per run, --max-tokens "
          f"{args.max_tokens}, {args.max_update} updates per run (first log interval dropped), {args.rounds} {how} "
          f"round(s)")
    print(f"| arch | params | {first} words/s | {second} words/s | {first}/{second} per round | median |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['arch']} | {row['params']:,} | {', '.join(map(str, row[f'{first}_wps']))} | "
              f"{', '.join(map(str, row[f'{second}_wps']))} | {', '.join(map(str, row['ratios']))} | "
              f"{row['median_ratio']} |")


# ------------------------------------------------------------------------------------------ GPU: words/s and MFU


def peak_flops(args):
    if args.peak_tflops:
        return args.peak_tflops * 1e12
    import torch

    name = torch.cuda.get_device_name(0)
    for key, tflops in PEAK_TFLOPS:
        if key in name:
            return tflops * 1e12
    raise SystemExit(f"unknown peak FLOP/s for {name!r}: pass --peak-tflops")


def bench_gpu(arch, data, args):
    from fairseq.data import Dictionary

    from fairseq_ext.models.arch_description import train_flops_per_token

    vocab = len(Dictionary.load(str(Path(data) / "dict.en.txt")))
    peak = peak_flops(args)
    runs = []
    for r in range(args.rounds):
        result = train_run("grid", arch, data, args)
        flops = train_flops_per_token(arch, vocab, result["mean_target_len"])
        result["mfu"] = result["wps"] * flops / peak
        log(f"bench: {arch} run {r + 1}/{args.rounds} {result['wps']:,.0f} words/s, MFU {100 * result['mfu']:.1f}%")
        runs.append(result)
    best = max(runs, key=lambda x: x["wps"])
    return {"arch": arch, "params": best["params"], "wps": [round(x["wps"]) for x in runs],
            "mfu": [round(x["mfu"], 4) for x in runs], "wpb": round(best["wpb"]),
            "mean_target_len": round(best["mean_target_len"], 1), "peak_tflops": peak / 1e12}


def print_gpu_table(rows, args):
    import torch

    print(f"\nfairseq-train on {torch.cuda.get_device_name(0)}, {args.precision}, --max-tokens {args.max_tokens}, "
          f"fused AdamW: {args.fused_adam}, {args.max_update} updates per run")
    print("| arch | params | target words/s per run | MFU per run | words/batch | mean target len |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['arch']} | {row['params']:,} | {', '.join(f'{w:,}' for w in row['wps'])} | "
              f"{', '.join(f'{100 * m:.1f}%' for m in row['mfu'])} | {row['wpb']:,} | {row['mean_target_len']} |")


# ------------------------------------------------------------------------------------------ main


def prepare_data(args):
    if args.data_bin:
        return args.data_bin
    out = args.work / ("multi30k_quick" if args.quick else "multi30k")
    if not (out / "bin" / "dict.en.txt").is_file():
        size = ["--train-size", "2000", "--vocab-size", "2000"] if args.quick else []
        log(f"bench: preparing Multi30k in {out}")
        subprocess.run([sys.executable, "scripts/prepare_multi30k.py", "--out", str(out), "--from",
                        str(args.data_from), *size], cwd=REPO, check=True, capture_output=True)
    return out / "bin"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--archs", help="comma-separated transformer_wmt_en_fr_d*_h* grid archs (default: CPU "
                                        "transformer_wmt_en_fr_d2_h256,transformer_wmt_en_fr_d2_h512; GPU "
                                        "transformer_wmt_en_fr_d6_h1024,transformer_wmt_en_fr_d12_h2048)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-update", type=int, help="updates per run (default CPU 25, GPU 300)")
    parser.add_argument("--log-interval", type=int, help="updates per fairseq log record (default CPU 5, GPU 20)")
    parser.add_argument("--max-tokens", type=int, help="tokens per batch (default CPU 2048, GPU 16384)")
    parser.add_argument("--threads", type=int, default=1, help="CPU mode: OMP_NUM_THREADS (default 1)")
    parser.add_argument("--concurrent", action="store_true",
                        help="CPU mode: run grid and stock at the same time (--threads each) instead of one after "
                             "the other, so that load from other jobs hits both alike (for shared machines)")
    parser.add_argument("--compare", choices=sorted(PAIRS), default="stock",
                        help="CPU mode: grid arch vs stock fairseq (default), or --autocast-bf16 vs fp32")
    parser.add_argument("--precision", choices=["bf16", "fp16"], default="bf16", help="GPU mode (default bf16)")
    parser.add_argument("--no-fused-adam", dest="fused_adam", action="store_false",
                        help="GPU mode: keep fairseq's own Adam instead of torch's fused AdamW")
    parser.add_argument("--peak-tflops", type=float, help="GPU mode: peak dense FLOP/s of the GPU, in TFLOP/s")
    parser.add_argument("--data-from", type=Path, default=DEFAULT_DATA, help="raw Multi30k folder")
    parser.add_argument("--data-bin", type=Path, help="an already binarized Multi30k (prepare_multi30k.py's DIR/bin)")
    parser.add_argument("--work", type=Path, help="cache of the prepared data (default runs/bench_train[_quick])")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument("--quick", action="store_true", help="smoke test: d2_h256, 6 updates, 1 round")
    args = parser.parse_args(argv)
    gpu = args.device == "cuda"
    args.work = args.work or REPO / "runs" / ("bench_train_quick" if args.quick else "bench_train")
    if args.quick:
        args.archs = args.archs or "transformer_wmt_en_fr_d2_h256"
        args.rounds, args.max_update, args.log_interval = 1, args.max_update or 6, args.log_interval or 2
        args.max_tokens = args.max_tokens or 1024
    args.archs = (args.archs or ("transformer_wmt_en_fr_d6_h1024,transformer_wmt_en_fr_d12_h2048" if gpu else
                                 "transformer_wmt_en_fr_d2_h256,transformer_wmt_en_fr_d2_h512")).split(",")
    for arch in args.archs:
        try:
            grid_shape(arch)
        except ValueError as error:
            parser.error(f"--archs: {error}")
    args.max_update = args.max_update or (300 if gpu else 25)
    args.log_interval = args.log_interval or (20 if gpu else 5)
    args.max_tokens = args.max_tokens or (16384 if gpu else 2048)
    if args.max_update < 2 * args.log_interval:
        parser.error(f"--max-update {args.max_update} must be >= 2 x --log-interval {args.log_interval} "
                     "(the first record is the warm-up)")
    if gpu:
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device here (this torch: " + torch.__version__ + ")")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["--as-fairseq-train"], ["--as-fairseq-train-fused-adam"]):
        return run_fairseq_train(argv[1:], fused_adam=argv[0].endswith("fused-adam"))
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    data = prepare_data(args)
    started = time.time()
    if args.device == "cpu":
        rows = [bench_cpu(arch, data, args) for arch in args.archs]
        print_cpu_table(rows, args)
    else:
        rows = [bench_gpu(arch, data, args) for arch in args.archs]
        print_gpu_table(rows, args)
    print(f"({time.time() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "results": rows},
                                        indent=1))
    return rows


if __name__ == "__main__":
    main()
