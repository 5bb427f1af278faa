#!/usr/bin/env python
"""Train one model with fairseq-train for a wall-clock budget, show its progress, and describe it in meta.json.

    train_budget.py --save-dir OUT/train/d2_h256 --arch ARCH --budget-s 120 [--label 2/6] [--models-after 4]
                    [--launch "torchrun --nproc-per-node 8"] -- DATA [fairseq-train options ...]

--budget-s 0 sets no time limit (fine-tuning: the fairseq options, e.g. --max-epoch, say when to stop).
The budget is fairseq's own --stop-time-hours: the trainer's cumulative time, which a resumed run carries on
from its checkpoint, so an interrupted model resumes (checkpoint_last.pt in --save-dir) with the time it has
left. fairseq-train writes SAVE_DIR/train.log (--log-file, --log-format json) and its console output to
SAVE_DIR/stdout.log; this prints one progress line every few seconds instead. When it ends, SAVE_DIR/meta.json
gets {"name", "arch", "params", "device", "words_per_s", ...} measured from the log, for scripts/analyze.py.
A folder with a meta.json is finished and is skipped.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from fairseq_ext.analysis.fairseq_output import json_records
from fairseq_ext.analysis.training_run import measure_run, unigram_entropy

PROGRESS_EVERY_S = 10


def clock(seconds):
    minutes, seconds = divmod(max(0, round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def describe_device(fairseq_args):
    if "--cpu" in fairseq_args:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "unknown CPU") if Path("/proc/cpuinfo").exists() else "CPU"
        precision = "bf16 autocast (--autocast-bf16)" if "--autocast-bf16" in fairseq_args else "fp32"
        return f"cpu: {os.cpu_count()} cores ({model}), {precision}"
    import torch

    precision = "fp16 mixed precision" if "--fp16" in fairseq_args else "fp32"
    return f"cuda: {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, {precision}"


def run_fairseq(cmd, save_dir, label, budget_s, models_after):
    """fairseq-train with its console output into stdout.log and a progress line every PROGRESS_EVERY_S."""
    name = save_dir.name
    started = time.monotonic()
    last_print = 0.0
    with open(save_dir / "stdout.log", "a") as console:
        console.write(f"\n$ {shlex.join(cmd)}\n")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:
            console.write(line)
            record = next(json_records([line]), None) if "train_inner" in line else None
            now = time.monotonic()
            if record is None or now - last_print < PROGRESS_EVERY_S:
                continue
            last_print = now
            elapsed = now - started
            where, left = clock(elapsed), ""
            if budget_s > 0:
                # What is left of this model's budget, plus the models after it at a full budget each.
                where += f" of {clock(budget_s)}"
                left = f" | training left: about {clock(max(0.0, budget_s - elapsed) + models_after * budget_s)}"
            print(f"  [train {label}] {name}: {where}, update {record['num_updates']}, loss {record['loss']}, "
                  f"{record['wps']} words/s{left}", file=sys.stderr, flush=True)
    return proc.wait()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], usage=__doc__.split("\n\n")[1])
    p.add_argument("--save-dir", type=Path, required=True)
    p.add_argument("--arch", required=True)
    p.add_argument("--budget-s", type=float, required=True, help="wall-clock training budget, seconds (0: none)")
    p.add_argument("--label", default="1/1", help="where this model is in its grid, e.g. 2/6")
    p.add_argument("--models-after", type=int, default=0, help="models still to train after this one")
    p.add_argument("--launch", default="", help="a launcher to put before fairseq-train (torchrun, srun)")
    p.add_argument("fairseq_args", nargs=argparse.REMAINDER, help="-- DATA and fairseq-train options")
    args = p.parse_args(argv)
    fairseq_args = args.fairseq_args[1:] if args.fairseq_args[:1] == ["--"] else args.fairseq_args
    save_dir = args.save_dir
    name = save_dir.name
    if (save_dir / "meta.json").is_file():
        meta = json.loads((save_dir / "meta.json").read_text())
        print(f"  [train {args.label}] {name}: finished before ({meta['updates']} updates), skipping",
              file=sys.stderr)
        return 0
    save_dir.mkdir(parents=True, exist_ok=True)
    tool = Path(sys.executable).parent / "fairseq-train"
    cmd = [*shlex.split(args.launch), str(tool), *fairseq_args, "--arch", args.arch, "--save-dir", str(save_dir),
           "--log-file", str(save_dir / "train.log"), "--log-format", "json", "--no-progress-bar"]
    if args.budget_s > 0:
        cmd += ["--stop-time-hours", f"{args.budget_s / 3600:.6f}"]
    resumed = " (resuming its checkpoint)" if (save_dir / "checkpoint_last.pt").is_file() else ""
    budget = f"{clock(args.budget_s)} budget" if args.budget_s > 0 else "no time limit"
    print(f"  [train {args.label}] {name} ({args.arch}): {budget}{resumed}", file=sys.stderr, flush=True)
    returncode = run_fairseq(cmd, save_dir, args.label, args.budget_s, args.models_after)
    if returncode != 0:
        tail = (save_dir / "stdout.log").read_text(errors="replace").splitlines()[-25:]
        print("\n".join("    " + line for line in tail), file=sys.stderr)
        print(f"train_budget.py: error: fairseq-train failed for {name} (exit {returncode}); "
              f"its output: {save_dir / 'stdout.log'}", file=sys.stderr)
        return 1
    meta = measure_run(save_dir, args.arch, args.budget_s, describe_device(fairseq_args))
    dictionary = Path(fairseq_args[0], "dict.txt") if fairseq_args else None
    if dictionary and dictionary.is_file():  # one dictionary: a masked LM's text, the bar its loss is read against
        meta["unigram_entropy"] = unigram_entropy(dictionary)
    (save_dir / "meta.json.tmp").write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(save_dir / "meta.json.tmp", save_dir / "meta.json")
    rate = f"{meta['words_per_s']:,.0f} words/s" if meta["words_per_s"] else "no words/s logged"
    print(f"  [train {args.label}] {name}: {meta['updates']} updates, {rate}, valid loss {meta['valid_loss']}",
          file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
