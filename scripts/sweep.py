#!/usr/bin/env python
"""Evaluate every checkpoint under every compression config of a grid with the real fairseq tools.

    sweep.py --data BIN --checkpoint small=OUT/train/small/checkpoint_best.pt big=... --out OUT/sweep.jsonl \\
             --task translation [--grid full|quick|tiny] [--subset test] [--generate-args "--beam 4"] [--spm MODEL]

Translation: fairseq-generate --scoring sacrebleu (metric bleu). masked_lm: fairseq-validate (metric loss, base 2;
ppl = 2 ** loss). sentence_prediction: fairseq-validate (metric accuracy). Each run uses the plugin's
compressed_<task> with --prune-sparsity / --quant-bits (--grid speed: --prune-heads / --prune-ffn / --int8-kernels),
and the memory it reports in its `compressed {json}` line. Translation records also keep fairseq-generate's decoding
speed (tokens/s, ms per sentence).

One JSON line per result is appended to --out (fields: fairseq_ext/analysis/sweep_results.py); results already
there are skipped, so an interrupted sweep resumes. A failed run stops the sweep with its output's last lines.
"""
import argparse
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from fairseq_ext.analysis import AnalysisError
from fairseq_ext.analysis.fairseq_output import (
    compressed_figures, generation_speed, sacrebleu_score, validation_metric,
)
from fairseq_ext.analysis.sweep_results import (
    FULL_PRECISION_BITS, SPEED_DEFAULTS, append_record, config_key, level_label, load_records, record_method,
)

PRUNING = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
BITS = [8, 6, 4, 3]


def config(sparsity=0.0, bits=FULL_PRECISION_BITS, prune_heads=0.0, prune_ffn=0.0, int8=False):
    """One compression config of a grid; the speed settings only where on, as in the sweep's records."""
    speed = {"prune_heads": prune_heads, "prune_ffn": prune_ffn, "int8": int8}
    return {"sparsity": sparsity, "bits": bits, **{k: v for k, v in speed.items() if v != SPEED_DEFAULTS[k]}}


DENSE = config()
# full: the paper's sweeps, pruning 10-90% and 8/6/4/3 bits, and both combined; quick: a spread of the same
# (pruning 50/70/90%, 8/4/3 bits, 50% + 4 bits) for a first look; speed: structured pruning and real int8
# kernels, for decoding speed on dense hardware (each translation record has fairseq-generate's tokens/s), beside
# simulated 8-bit, the accuracy int8 kernels should match; tiny: one config per method, for smoke tests;
# dense: the uncompressed model alone (a model's own score).
GRIDS = {
    "full": [DENSE, *(config(s) for s in PRUNING), *(config(bits=b) for b in BITS),
             *(config(s, b) for s in (0.3, 0.5, 0.7) for b in (8, 4))],
    "quick": [DENSE, *(config(s) for s in (0.5, 0.7, 0.9)), *(config(bits=b) for b in (8, 4, 3)), config(0.5, 4)],
    "speed": [DENSE, config(prune_heads=0.25), config(prune_heads=0.5), config(prune_ffn=0.25),
              config(prune_ffn=0.5), config(prune_heads=0.25, prune_ffn=0.5), config(bits=8), config(int8=True),
              config(prune_heads=0.25, prune_ffn=0.5, int8=True)],
    "tiny": [DENSE, config(0.5), config(bits=4)],
    "dense": [DENSE],
}


@dataclass(frozen=True)
class Task:
    tool: str
    metric: str
    higher_is_better: bool
    default_subset: str
    tool_args: list  # before --generate-args, which can override them


VALIDATE_ARGS = ["--max-tokens", "8000", "--log-format", "json"]  # JSON: the record the metric is read from
TASKS = {
    "translation": Task("fairseq-generate", "bleu", True, "test",
                        ["--beam", "5", "--max-tokens", "8000", "--quiet", "--scoring", "sacrebleu"]),
    "masked_lm": Task("fairseq-validate", "loss", False, "valid", VALIDATE_ARGS),
    # fairseq-validate resolves sentence_prediction's classification head name from the criterion's config.
    "sentence_prediction": Task("fairseq-validate", "accuracy", True, "valid",
                                [*VALIDATE_ARGS, "--criterion", "sentence_prediction"]),
}


class SweepError(Exception):
    """Bad input, found before any run, or a failed run: one line that names the option or the config."""


def named_checkpoint(text):
    name, sep, path = text.partition("=")
    if not (sep and name and path):
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=PATH")
    return name, Path(path)


def find_tool(name):
    """The venv's tool (beside this python) first, so a sweep uses the fairseq it was installed with."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise SweepError(f"{name} not found beside {sys.executable} or on PATH (is fairseq installed? make setup)")
    return found


def check_inputs(args, task):
    """Every problem that would otherwise surface minutes into the sweep."""
    if not args.data.is_dir():
        raise SweepError(f"--data {args.data}: no such folder (the fairseq-preprocess output, e.g. DATA/bin)")
    if not any(args.data.rglob(f"{args.subset}.*")):
        raise SweepError(f"--subset {args.subset}: no {args.subset}.* files in --data {args.data}")
    names = [name for name, _ in args.checkpoint]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise SweepError(f"--checkpoint: the name {', '.join(duplicates)} is given twice")
    for name, path in args.checkpoint:
        if not path.is_file():
            raise SweepError(f"--checkpoint {name}={path}: no such file")
    if args.spm is not None and args.task != "translation":
        raise SweepError("--spm: only --task translation detokenizes with sentencepiece")
    if args.spm is not None and not args.spm.is_file():
        raise SweepError(f"--spm {args.spm}: no such file")
    try:
        extra = shlex.split(args.generate_args)
    except ValueError as error:
        raise SweepError(f"--generate-args: {error}") from None
    return find_tool(task.tool), extra


def previous_results(out, task, subset):
    """The results already in --out, which must be of the same metric and subset to be comparable."""
    if not out.exists():
        return []
    try:
        records = load_records(out, option="--out")
    except AnalysisError as error:
        raise SweepError(str(error)) from None
    for record in records:
        if (record["metric"], record["subset"]) != (task.metric, subset):
            raise SweepError(f"--out {out} holds {record['metric']} on {record['subset']}; this sweep measures "
                             f"{task.metric} on {subset}: use another --out")
    return records


def speed_flags(entry):
    """--prune-heads / --prune-ffn / --int8-kernels for a config (int8 kernels run on the CPU: --cpu)."""
    flags = [f"--{name.replace('_', '-')}={entry[name]}" for name in ("prune_heads", "prune_ffn") if entry.get(name)]
    return flags + (["--int8-kernels", "--cpu"] if entry.get("int8") else [])


def command(args, tool, extra, entry):
    base = [tool, str(args.data), "--user-dir", str(REPO / "fairseq_ext"), "--task", f"compressed_{args.task}",
            "--path", entry["checkpoint"], *TASKS[args.task].tool_args]
    if args.task == "translation":
        base += ["--gen-subset", args.subset]
        base += (["--bpe", "sentencepiece", "--sentencepiece-model", str(args.spm)] if args.spm
                 else ["--post-process", "sentencepiece"])
    else:
        base += ["--valid-subset", args.subset]
    # The user's --generate-args come last: fairseq's argparse lets the last occurrence of an option win.
    return [*base, "--prune-sparsity", str(entry["sparsity"]), "--quant-bits", str(entry["bits"]), *speed_flags(entry),
            *extra]


def config_name(entry):
    return f"{entry['model']} {level_label(entry)}"


def evaluate(args, task, tool, extra, entry):
    """Run one config of the plan; its record, or SweepError with the tool's last lines when it fails."""
    cmd = command(args, tool, extra, entry)
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.monotonic() - started
    output = proc.stdout + proc.stderr
    try:
        if proc.returncode != 0:
            raise AnalysisError(f"{task.tool} exited {proc.returncode}")
        value = (sacrebleu_score(output) if args.task == "translation"
                 else validation_metric(output, args.subset, task.metric))
        summary = compressed_figures(output)
        if summary is None:
            raise AnalysisError(f"{task.tool} printed no 'compressed {{json}}' line (--task compressed_{args.task})")
        speed = {}
        if args.task == "translation":
            tokens_per_s, latency_ms = generation_speed(output)
            speed = {"tokens_per_s": round(tokens_per_s, 3), "latency_ms": round(latency_ms, 3)}
    except AnalysisError as error:
        tail = "\n".join("    " + line[:300] for line in output.splitlines()[-25:])  # the config dump is one line
        raise SweepError(f"{config_name(entry)} failed: {error}\n"
                         f"  command: {shlex.join(cmd)}\n  output ends:\n{tail}") from None
    # With structured pruning or int8 kernels the memory is that of the weights as they run (runtime_mb).
    memory = summary.get("runtime_mb", summary["compressed_mb"])
    return {
        **entry, "params": int(summary["params"]), "method": record_method(entry),
        "compressed_mb": float(memory), "fp32_mb": float(summary["fp32_mb"]),
        "metric": task.metric, "value": value, "higher_is_better": task.higher_is_better, "seconds": round(seconds, 2),
        **speed,
    }


def duration(seconds):
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def sweep(args):
    task = TASKS[args.task]
    args.subset = args.subset or task.default_subset
    tool, extra = check_inputs(args, task)
    done = {config_key(record) for record in previous_results(args.out, task, args.subset)}
    plan = [{"model": name, "checkpoint": str(path.resolve()), **settings, "subset": args.subset}
            for name, path in args.checkpoint for settings in GRIDS[args.grid]]
    todo = [entry for entry in plan if config_key(entry) not in done]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if len(todo) < len(plan):
        log(f"resuming: {len(plan) - len(todo)} of {len(plan)} configs already in {args.out}")
    started = time.monotonic()
    for i, entry in enumerate(todo, start=1):
        log(f"[{i}/{len(todo)}] {config_name(entry)} ...")
        record = evaluate(args, task, tool, extra, entry)
        append_record(args.out, record)
        elapsed = time.monotonic() - started
        eta = elapsed / i * (len(todo) - i)
        log(f"[{i}/{len(todo)}] {config_name(entry)}: {task.metric} {record['value']:.4g} at "
            f"{record['compressed_mb']:.4g} MB in {record['seconds']:.0f}s | elapsed {duration(elapsed)}, "
            f"ETA {duration(eta)}")
    log(f"done: {len(plan)} results in {args.out}")


def log(message):
    print(f"sweep.py: {message}", file=sys.stderr, flush=True)


def parser():
    grids = "; ".join(f"{name} ({len(configs)}): " + ", ".join(map(level_label, configs))
                      for name, configs in GRIDS.items())
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=f"grids: {grids}")
    p.add_argument("--data", type=Path, required=True, help="the binarized data folder (fairseq-preprocess output)")
    p.add_argument("--checkpoint", type=named_checkpoint, nargs="+", required=True, metavar="NAME=PATH",
                   help="the models to compress, each named as in the plots: small=OUT/train/small/checkpoint_last.pt")
    p.add_argument("--out", type=Path, required=True, help="the results, JSON lines (appended to; resumed from)")
    p.add_argument("--task", choices=TASKS, required=True, help="what the checkpoints do, which picks tool and metric")
    p.add_argument("--grid", choices=GRIDS, default="full", help="which compression configs (default: full)")
    p.add_argument("--subset", help="the split to score (default: test for translation, valid otherwise)")
    p.add_argument("--generate-args", default="", metavar='"ARGS"',
                   help="more arguments for fairseq-generate / fairseq-validate, e.g. \"--beam 4 --prune-scope layer\"")
    p.add_argument("--spm", type=Path, help="translation: detokenize with this sentencepiece model (--bpe "
                                            "sentencepiece) instead of --post-process sentencepiece")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        sweep(args)
    except SweepError as error:
        print(f"sweep.py: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
