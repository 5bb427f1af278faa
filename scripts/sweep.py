#!/usr/bin/env python
"""Evaluate every checkpoint under every compression config of a grid with the real fairseq tools.

    sweep.py --data BIN --checkpoint small=OUT/train/small/checkpoint_best.pt big=... --out OUT/sweep.jsonl \\
             --task translation [--grid full|quick|tiny] [--subset test] [--generate-args "--beam 4"] [--spm MODEL]
             [--calib-samples 128]

Translation: fairseq-generate --scoring sacrebleu (metric bleu). masked_lm: fairseq-validate (metric loss, base 2;
ppl = 2 ** loss). sentence_prediction: fairseq-validate (metric accuracy). Each run uses the plugin's
compressed_<task> with --prune-sparsity / --quant-bits (--grid speed: --prune-heads / --prune-ffn / --int8-kernels),
with --prune-method / --quant-method where a config uses another compressor than the paper's magnitude pruning and
round-to-nearest quantization (the calibrated ones, SparseGPT and GPTQ, calibrate on --calib-samples training
samples), and the memory it reports in its `compressed {json}` line. Translation records also keep
fairseq-generate's decoding speed (tokens/s, ms per sentence) and its detokenized hypotheses, one file per config
(hyps/<model>/<config>.txt beside --out, the references in hyps/references.<subset>.txt), which the report's
significance tests read.

Every record keeps both memories: compressed_mb (the packed file's accounted bytes) and runtime_mb (the weights
as they ran: float32 for a simulated config; with --int4-kernels the 2..4-bit configs run on torch's int4 kernels
and hold their codes), and the peak RSS of the fairseq process.

The grids and the task table are fairseq_ext/analysis/sweep_grids.py.
One JSON line per result is appended to --out (fields: fairseq_ext/analysis/sweep_results.py); results already
there are skipped, so an interrupted sweep resumes. A failed run stops the sweep with its output's last lines.
"""
import argparse
import shlex
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from fairseq_ext.analysis import AnalysisError
from fairseq_ext.analysis.fairseq_output import (
    calibration_fields, compressed_figures, dataset_length, generation_speed, sacrebleu_score, translations,
    validation_metric,
)
from fairseq_ext.analysis.sweep_grids import GRIDS, TASKS
from fairseq_ext.analysis.sweep_results import (
    COMPRESSOR_DEFAULTS, append_record, compressors, config_key, config_slug, is_calibrated, level_label, load_records,
    record_method, speed_settings, write_atomically,
)
from fairseq_ext.measured_run import run_measured

INT4_MAX_BITS = 4  # --int4-kernels runs 2..4-bit grids (fairseq_ext.compression.int4; not imported: no torch here)


class SweepError(Exception):
    """Bad input, found before any run, or a failed run: one line that names the option or the config."""


def named_checkpoint(text):
    name, sep, path = text.partition("=")
    if not (sep and name and path):
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=PATH")
    if name in (".", "..") or "/" in name:  # the name is a folder of the kept hypotheses
        raise argparse.ArgumentTypeError(f"{text!r}: NAME may not be . or .. or hold a /")
    return name, Path(path)


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


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
    if args.task == "translation" and "--quiet" in extra:
        raise SweepError("--generate-args: --quiet hides the hypotheses the sweep keeps (for the significance tests)")
    calibrated = [entry for entry in GRIDS[args.grid] if is_calibrated(entry)]
    if calibrated and not any(args.data.rglob("train.*")):
        raise SweepError(f"--data {args.data}: no train.* files, which the calibrated configs of --grid {args.grid} "
                         f"({level_label(calibrated[0])}, ...) calibrate on")
    return find_tool(task.tool), extra


def previous_results(out, task, subset, calib_samples):
    """The results already in --out, which must be of the same metric and subset, and calibrated on as many
    samples, to be comparable."""
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
        if record.get("calibration_samples", calib_samples) != calib_samples:
            raise SweepError(f"--calib-samples {calib_samples}: --out {out} holds results calibrated on "
                             f"{record['calibration_samples']} samples: use that number or another --out")
    return records


def speed_flags(entry):
    """--prune-heads / --prune-ffn / --int8-kernels / --int4-kernels for a config (the kernels run on the CPU:
    --cpu)."""
    flags = [f"--{name.replace('_', '-')}={entry[name]}" for name in ("prune_heads", "prune_ffn") if entry.get(name)]
    kernels = [f"--{name}-kernels" for name in ("int8", "int4") if entry.get(name)]
    return flags + (kernels + ["--cpu"] if kernels else [])


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
    return [*base, "--prune-sparsity", str(entry["sparsity"]), "--quant-bits", str(entry["bits"]),
            *compressor_flags(entry, args.calib_samples), *speed_flags(entry), *extra]


def compressor_flags(entry, calib_samples):
    """--prune-method / --quant-method where a config does not use the default (so that the paper's configs run
    the very commands they always did), and the number of calibration samples where a method calibrates."""
    flags = [f"--{name.replace('_', '-')}={value}" for name, value, default in
             zip(COMPRESSOR_DEFAULTS, compressors(entry), COMPRESSOR_DEFAULTS.values()) if value != default]
    return flags + (["--calib-samples", str(calib_samples)] if is_calibrated(entry) else [])


def config_name(entry):
    return f"{entry['model']} {level_label(entry)}"


def evaluate(args, task, tool, extra, entry):
    """Run one config of the plan; its record, or SweepError with the tool's last lines when it fails."""
    cmd = command(args, tool, extra, entry)
    started = time.monotonic()
    proc = run_measured(cmd, cwd=REPO)
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
        calibration = calibration_fields(summary, entry, args.calib_samples)
        measured = {}
        if args.task == "translation":
            tokens_per_s, latency_ms = generation_speed(output)
            measured = {"tokens_per_s": round(tokens_per_s, 3), "latency_ms": round(latency_ms, 3),
                        **keep_translations(args, entry, output)}
        elif args.task == "sentence_prediction":
            measured = {"examples": dataset_length(args.data / "input0" / f"{args.subset}.idx")}
    except AnalysisError as error:
        tail = "\n".join("    " + line[:300] for line in output.splitlines()[-25:])  # the config dump is one line
        raise SweepError(f"{config_name(entry)} failed: {error}\n"
                         f"  command: {shlex.join(cmd)}\n  output ends:\n{tail}") from None
    # Structured pruning and int8 kernels compress outside the accounting: their memory is that of the weights as
    # they run. Every record keeps both, and the process's peak.
    heads, ffn, int8, _ = speed_settings(entry)
    memory = summary["runtime_mb"] if heads or ffn or int8 else summary["compressed_mb"]
    return {
        **entry, "params": int(summary["params"]), "method": record_method(entry),
        "compressed_mb": float(memory), "fp32_mb": float(summary["fp32_mb"]),
        "runtime_mb": float(summary["runtime_mb"]), "peak_rss_mb": round(proc.peak_rss_mb, 1),
        "metric": task.metric, "value": value, "higher_is_better": task.higher_is_better, "seconds": round(seconds, 2),
        **calibration, **measured,
    }


def keep_translations(args, entry, output):
    """The config's detokenized hypotheses in hyps/<model>/<config>.txt beside --out, the references once in
    hyps/references.<subset>.txt; the record's fields naming them (relative to --out's folder) and the count."""
    hypotheses, references = translations(output)
    folder = args.out.parent
    kept_references = Path("hyps") / f"references.{args.subset}.txt"
    text = "".join(line + "\n" for line in references)
    if (folder / kept_references).is_file():
        if (folder / kept_references).read_text(encoding="utf-8") != text:
            raise AnalysisError(f"the references of --data differ from those of the results beside --out "
                                f"({folder / kept_references}): use another --out")
    else:
        (folder / "hyps").mkdir(parents=True, exist_ok=True)
        write_atomically(folder / kept_references, text)
    kept_hypotheses = Path("hyps") / entry["model"] / f"{config_slug(entry)}.txt"
    (folder / kept_hypotheses).parent.mkdir(parents=True, exist_ok=True)
    write_atomically(folder / kept_hypotheses, "".join(line + "\n" for line in hypotheses))
    return {"examples": len(hypotheses), "hypotheses": str(kept_hypotheses), "references": str(kept_references)}


def duration(seconds):
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def sweep(args):
    task = TASKS[args.task]
    args.subset = args.subset or task.default_subset
    tool, extra = check_inputs(args, task)
    done = {config_key(record) for record in previous_results(args.out, task, args.subset, args.calib_samples)}
    plan = [{"model": name, "checkpoint": str(path.resolve()), **settings, "subset": args.subset,
             **({"int4": True} if args.int4_kernels and settings["bits"] <= INT4_MAX_BITS else {})}
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
    p.add_argument("--calib-samples", type=positive_int, default=128, metavar="N",
                   help="training samples the calibrated configs (SparseGPT, GPTQ) calibrate on (default: 128)")
    p.add_argument("--int4-kernels", action="store_true",
                   help="run every 2..4-bit config on torch's CPU int4 kernels (--int4-kernels --cpu): its runtime_mb "
                        "is then that of its codes, not of float32 weights on its grid")
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
