"""Untrained fairseq models and benchmark data folders, for the benchmark scripts (bench_generate, bench_calibration).

The speed of decoding or of calibration does not depend on what the weights learned, so the benchmarks build the
paper-sized models with fairseq itself (the same build as fairseq-train) and save their random initial weights as
ordinary checkpoints, and pad the real Multi30k dictionaries to the vocabulary size of the model they measure.
"""
import json
import os
import shutil
import sys

from fairseq_ext.benchmarks import PLUGIN_DIR
from fairseq_ext.measured_run import run_measured

REPO = PLUGIN_DIR.parent


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def run(cmd, threads, timeout=3600):
    """Run a command from the repo root with ``threads`` OpenMP threads; its output, or RuntimeError with its end."""
    return run_with_peak(cmd, threads, timeout)[0]


def run_with_peak(cmd, threads, timeout=3600):
    """run(), and the command's peak resident memory (MB)."""
    cmd = [str(c) for c in cmd]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCH_FORCE_")}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    proc = run_measured(cmd, cwd=REPO, env=env, timeout=timeout)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{output[-4000:]}")
    return output, proc.peak_rss_mb


def prepare_multi30k(work, source, quick):
    """The binarized Multi30k (real BPE, real test set), prepared once under ``work``."""
    out = work / ("multi30k_quick" if quick else "multi30k")
    size = ["--train-size", "2000", "--vocab-size", "2000"] if quick else []
    if not (out / "bin" / "dict.en.txt").is_file():
        log(f"bench: preparing Multi30k in {out}")
        run([sys.executable, "scripts/prepare_multi30k.py", "--out", out, "--from", source, *size], threads=2)
    return out / "bin"


def make_bench_data(multi30k_bin, out, vocab, sentences):
    """``out``: dictionaries padded to ``vocab`` symbols + the first ``sentences`` test pairs, binarized."""
    from fairseq.data import Dictionary, data_utils, indexed_dataset

    stamp = out / "bench.json"
    meta = {"vocab": vocab, "sentences": sentences, "from": str(multi30k_bin.resolve())}
    if stamp.is_file() and json.loads(stamp.read_text()) == meta:
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for lang in ("en", "fr"):
        lines = (multi30k_bin / f"dict.{lang}.txt").read_text().splitlines()
        entries = len(lines) + 4  # fairseq's 4 specials are not in the file
        if vocab < entries:
            raise SystemExit(f"--vocab {vocab} is smaller than the Multi30k dictionary ({entries} symbols)")
        lines += [f"madeupword{i:05d} 0" for i in range(vocab - entries)]
        (out / f"dict.{lang}.txt").write_text("\n".join(lines) + "\n")
    for lang in ("en", "fr"):
        dictionary = Dictionary.load(str(multi30k_bin / f"dict.{lang}.txt"))
        data = data_utils.load_indexed_dataset(str(multi30k_bin / f"test.en-fr.{lang}"), dictionary)
        n = min(sentences, len(data))
        prefix = str(out / f"test.en-fr.{lang}")
        builder = indexed_dataset.make_builder(prefix + ".bin", impl="mmap", vocab_size=vocab)
        for i in range(n):
            builder.add_item(data[i])
        builder.finalize(prefix + ".idx")
    stamp.write_text(json.dumps(meta))
    return out


def make_checkpoint(arch, data, path, extra_args=()):
    """Save fairseq's freshly built (untrained) ``arch`` for ``data``'s dictionaries as a loadable checkpoint."""
    import torch
    from fairseq import checkpoint_utils, options, tasks, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from omegaconf import OmegaConf

    # fairseq skips --user-dir for a package imported already, as fairseq_ext is (fairseq_ext.benchmarks).
    import fairseq_ext.plugin  # noqa: F401

    if path.is_file():
        return path
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(
        parser, [str(data), "--user-dir", str(PLUGIN_DIR), "--task", "translation", "--arch", arch,
                 "--cpu", "--seed", "1", *extra_args]
    )
    cfg = convert_namespace_to_omegaconf(args)
    utils.import_user_module(cfg.common)
    torch.manual_seed(1)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    state = {
        "args": None,
        "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "model": model.state_dict(),
        "criterion": None,
        "optimizer_history": [{"criterion_name": "CrossEntropyCriterion", "optimizer_name": "none",
                               "lr_scheduler_state": {}, "num_updates": 0}],
        "task_state": {},
        "extra_state": {"note": "untrained weights saved by scripts/bench_generate.py"},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint_utils.torch_persistent_save(state, str(path))
    params = sum(p.numel() for p in model.parameters())
    log(f"bench: saved untrained {arch} ({params / 1e6:.1f}M parameters) to {path}")
    return path
