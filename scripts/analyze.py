#!/usr/bin/env python
"""Plots, tables and a report from training logs and compression sweeps (Li et al., 2020, figures and deployment).

    analyze.py convergence --logs OUT/train/*/train.log [--metric valid_loss] [--target X] --out DIR
    analyze.py frontier --sweep OUT/sweep.jsonl --out DIR
    analyze.py select --sweep OUT/sweep.jsonl --max-mb N [--max-ms N]
    analyze.py report --run OUT [--out OUT/report]
    analyze.py merge --sweeps OUT/sweep/*.jsonl --out OUT/sweep.jsonl

Needs no fairseq or torch; matplotlib only for the PNGs (without it, the tables are still written).
"""
import argparse
import math
import sys
from pathlib import Path

from fairseq_ext.analysis import AnalysisError
from fairseq_ext.analysis.convergence_files import write_convergence
from fairseq_ext.analysis.frontier_files import write_frontier
from fairseq_ext.analysis.report import write_report
from fairseq_ext.analysis.selection import describe, select
from fairseq_ext.analysis.significance import SignificanceTests
from fairseq_ext.analysis.sweep_results import merge_sweeps, read_sweep
from fairseq_ext.analysis.training_run import read_training_runs


def positive_number(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def finite_number(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number")
    return value


def convergence(args):
    files = write_convergence(read_training_runs(args.logs), args.metric, args.target, args.out)
    return wrote(args, [*files.plots, args.out / "time_to_target.md"], files.plot_problem)


def frontier(args):
    files = write_frontier(read_sweep(args.sweep), args.out)
    written = [*(v.plot for v in files.views if v.plot), *(v.table for v in files.views)]
    return wrote(args, written, files.plot_problem)


def select_command(args):
    selection = select(read_sweep(args.sweep), args.max_mb, args.max_ms)
    print(describe(selection, SignificanceTests(args.sweep)))
    return 0 if selection.best else 1  # a budget nothing fits is an answer, and a failed selection


def report(args):
    path, plot_problem = write_report(args.run, args.out, args.metric, args.target, args.min_score)
    return wrote(args, [path], plot_problem)


def merge(args):
    for sweep in args.sweeps:
        if not sweep.is_file():
            raise AnalysisError(f"--sweeps {sweep}: no such file (scripts/sweep.py writes it)")
    merge_sweeps(args.sweeps, args.out, option="--sweeps")
    return wrote(args, [args.out], None)


def wrote(args, paths, plot_problem):
    if plot_problem:
        print(f"analyze.py {args.command}: note: {plot_problem}", file=sys.stderr)
    for path in paths:
        print(f"wrote {path}")
    return 0


def parser():
    main = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")

    metric_help = ("the validation metric as fairseq logs it: valid_loss, valid_ppl, valid_bleu (with --eval-bleu) "
                   "... (default: valid_loss)")
    target_help = "the value to time the runs to (default: the best value every run reached)"

    command = commands.add_parser("convergence", help="validation metric vs wall-clock and vs updates, per size",
                                  description="Validation metric vs wall-clock time and vs updates, one curve per "
                                              "model, and the time each took to reach a target value.")
    command.add_argument("--logs", nargs="+", type=Path, required=True, metavar="LOG",
                         help="fairseq-train --log-file logs (--log-format json), one per model: OUT/train/*/train.log")
    command.add_argument("--metric", default="valid_loss", help=metric_help)
    command.add_argument("--target", type=finite_number, help=target_help)
    command.add_argument("--out", type=Path, required=True, help="folder for the PNGs and tables")
    command.set_defaults(handler=convergence)

    command = commands.add_parser("frontier", help="metric vs compressed memory with its Pareto frontier",
                                  description="Metric vs compressed memory for every (model, method, level) of a "
                                              "sweep, with the Pareto frontier; also pruning-only and "
                                              "quantization-only views.")
    command.add_argument("--sweep", type=Path, required=True, help="the results of scripts/sweep.py (JSON lines)")
    command.add_argument("--out", type=Path, required=True, help="folder for the PNGs and CSVs")
    command.set_defaults(handler=frontier)

    command = commands.add_parser("select", help="the best config under a memory (and latency) budget",
                                  description="The best config under a memory budget, and what the best "
                                              "uncompressed model that fits scores. Exits 1 when nothing fits.")
    command.add_argument("--sweep", type=Path, required=True, help="the results of scripts/sweep.py (JSON lines)")
    command.add_argument("--max-mb", type=positive_number, required=True, help="memory budget for the weights, MB")
    command.add_argument("--max-ms", type=positive_number,
                         help="latency budget, ms; considers only results with a measured latency_ms")
    command.set_defaults(handler=select_command)

    command = commands.add_parser("report", help="all of the above for a run folder, as report.md",
                                  description="Convergence, frontier and budget tables for a run folder "
                                              "(OUT/train/*/train.log, OUT/sweep.jsonl) in one markdown report "
                                              "with its plots, CSV and JSON.")
    command.add_argument("--run", type=Path, required=True, help="the run folder the recipes wrote (OUT)")
    command.add_argument("--out", type=Path, help="where to write (default: RUN/report)")
    command.add_argument("--metric", default="valid_loss", help=metric_help)
    command.add_argument("--target", type=finite_number, help=target_help)
    command.add_argument("--min-score", type=finite_number,
                         help="the uncompressed sweep score a model must reach to count as learned and take part in "
                              "the verdicts (default: BLEU 10, accuracy 60 (%%); no floor for other metrics)")
    command.set_defaults(handler=report)

    command = commands.add_parser("merge", help="several sweep files as one",
                                  description="One sweep file from several (the recipes sweep each model into a "
                                              "file of its own): every record in order, its paths to kept "
                                              "hypotheses and references made relative to the new file.")
    command.add_argument("--sweeps", nargs="+", type=Path, required=True, metavar="SWEEP",
                         help="the results of scripts/sweep.py (JSON lines)")
    command.add_argument("--out", type=Path, required=True, help="the merged file (replaced)")
    command.set_defaults(handler=merge)
    return main


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except AnalysisError as error:
        print(f"analyze.py {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
