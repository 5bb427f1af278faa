"""What the benchmark scripts run and how they read it: the fairseq command lines they compare and the figures they
take from fairseq's own output (scripts/bench_train.py: fairseq-train words/s; scripts/bench_generate.py:
fairseq-generate tokens/s), read by the one reader of fairseq's output (fairseq_ext.analysis.fairseq_output). The
scripts run these commands as subprocesses and print the tables.

Plain python: no torch or fairseq import (the benchmarked tools run in their own processes).
"""
import re
import statistics
import sys
from pathlib import Path

from fairseq_ext.analysis import AnalysisError
from fairseq_ext.analysis.fairseq_output import compressed_figures, json_records, model_params, translated, words_per_s

# --user-dir of the plugin's runs: this package's folder.
PLUGIN_DIR = Path(__file__).resolve().parent
# The venv's tools, beside this python; fairseq-train as a module, which works where fairseq is on PYTHONPATH
# without its console scripts too.
FAIRSEQ_TRAIN = [sys.executable, "-m", "fairseq_cli.train"]
FAIRSEQ_GENERATE = Path(sys.executable).parent / "fairseq-generate"

# ---------------------------------------------------------------------------------------------- fairseq-train

GRID_NAME = re.compile(r"^transformer_wmt_en_fr_d(\d+)_h(\d+)$")
# The two kinds of run compared by bench_train (CPU), the first over the second: the grid arch against stock
# fairseq's arch of the same sizes, and --autocast-bf16 against fp32 (both the grid arch in compressed_translation).
PAIRS = {"stock": ("grid", "stock"), "bf16": ("bf16", "fp32")}
TRAIN_KINDS = ("grid", "stock", "fp32", "bf16")


def grid_shape(arch):
    """(depth, width) of a ``transformer_wmt_en_fr_d{depth}_h{width}`` grid arch; ValueError for another name."""
    match = GRID_NAME.match(arch)
    if not match:
        raise ValueError(f"{arch} is not a transformer_wmt_en_fr_d*_h* grid arch")
    return int(match[1]), int(match[2])


def stock_arch_args(arch):
    """fairseq's stock arch with the sizes of grid point ``arch`` spelled out (what the grid preset fills in)."""
    depth, width = grid_shape(arch)
    args = ["--arch", "transformer_vaswani_wmt_en_fr_big", "--share-all-embeddings"]
    for side in ("encoder", "decoder"):
        args += [f"--{side}-layers", depth, f"--{side}-embed-dim", width, f"--{side}-ffn-embed-dim", 4 * width,
                 f"--{side}-attention-heads", width // 64]
    return args


def train_model_args(kind, arch):
    """(task, model arguments) of a run of ``kind`` (TRAIN_KINDS) for grid arch ``arch``: what differs between the
    two runs compared; everything else (train_settings) is the same."""
    if kind == "stock":
        return "translation", stock_arch_args(arch)  # no --user-dir: fairseq alone
    grid_shape(arch)
    model = ["--user-dir", PLUGIN_DIR, "--arch", arch]
    if kind == "grid":
        return "translation", model
    if kind == "fp32":
        return "compressed_translation", model
    if kind == "bf16":
        return "compressed_translation", [*model, "--autocast-bf16"]
    raise ValueError(f"unknown kind of run {kind!r}; one of {', '.join(TRAIN_KINDS)}")


def train_settings(max_tokens, max_update, log_interval, task="translation"):
    """The fairseq-train settings every run shares: task, optimizer, schedule, batches, seed, JSON log records."""
    return [
        "--task", task, "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "5e-4",
        "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "4000", "--criterion", "label_smoothed_cross_entropy",
        "--label-smoothing", "0.1", "--max-tokens", max_tokens, "--max-update", max_update,
        "--seed", "1", "--log-format", "json", "--log-interval", log_interval, "--no-progress-bar",
        "--no-save", "--disable-validation", "--data-buffer-size", "0",  # no prefetch thread: a clean exit (recipes)
    ]


def cpu_train_command(kind, arch, data, max_tokens, max_update, log_interval):
    """fairseq-train of a CPU run of ``kind`` for ``arch`` on the binarized ``data``."""
    task, model = train_model_args(kind, arch)
    return [*FAIRSEQ_TRAIN, data, *model, *train_settings(max_tokens, max_update, log_interval, task), "--cpu",
            "--num-workers", "0"]


def parse_train_output(output):
    """(params, [train_inner records]) of a fairseq-train --log-format json output; params None if not logged."""
    inner = [r for r in json_records(output.splitlines()) if "num_updates" in r and "wps" in r]
    return model_params(output), inner


def train_throughput(records):
    """Words/s of a run from its train_inner records, as fairseq_output.words_per_s defines it (the median after
    the first interval, which holds the warm-up), with the mean words per batch and mean target length (wpb / bsz)
    of the same intervals. ValueError for fewer than 2 records, or no rate measured."""
    if len(records) < 2:
        raise ValueError(f"need >= 2 train_inner records, got {len(records)}")
    wps = words_per_s(records)
    if wps is None:
        raise ValueError("fairseq logged no words/s in its train_inner records")
    steady = records[1:]
    return {"wps": wps,
            "wpb": statistics.mean(float(r["wpb"]) for r in steady),
            "mean_target_len": statistics.mean(float(r["wpb"]) / float(r["bsz"]) for r in steady),
            "records": len(records)}


# ---------------------------------------------------------------------------------------------- fairseq-generate

# fp32 is stock fairseq (the translation task and its SequenceGenerator); every other variant runs the plugin's
# compressed_translation, which decodes with the lean decoder unless the variant ends in _stock.
FAIRSEQ_VARIANTS = ("fp32", "lean", "int8", "int8_stock", "pruned", "pruned_int8", "sim4", "int4", "int4_packed")
CT2_VARIANTS = ("ct2_fp32", "ct2_int8")
# Variants that decode the packed file of the checkpoint (scripts/pack_checkpoint.py with four_bit_flags).
PACKED_VARIANTS = ("int4_packed",)


def four_bit_flags(group_size):
    """The 4-bit grid of the sim4 / int4 variants: round-to-nearest, groups of ``group_size`` input columns."""
    return ["--quant-bits", "4", "--quant-granularity", "group", "--quant-group-size", group_size]


def generate_command(variant, data, checkpoint, *, beam, batch_size, length, prune_heads, prune_ffn, group_size):
    """fairseq-generate of one FAIRSEQ_VARIANTS run on the test set: every sentence exactly ``length`` tokens
    (--min-len = --max-len-b, --max-len-a 0), so the work per sentence is the same for every variant.
    ``checkpoint``: the packed file for PACKED_VARIANTS."""
    flags = {
        "fp32": ["--task", "translation"],
        "lean": ["--task", "compressed_translation"],
        "int8": ["--task", "compressed_translation", "--int8-kernels"],
        "int8_stock": ["--task", "compressed_translation", "--int8-kernels", "--stock-generator"],
        "pruned": ["--task", "compressed_translation", "--prune-heads", prune_heads, "--prune-ffn", prune_ffn],
        "pruned_int8": ["--task", "compressed_translation", "--prune-heads", prune_heads,
                        "--prune-ffn", prune_ffn, "--int8-kernels"],
        "sim4": ["--task", "compressed_translation", *four_bit_flags(group_size)],
        "int4": ["--task", "compressed_translation", *four_bit_flags(group_size), "--int4-kernels"],
        "int4_packed": ["--task", "compressed_translation", "--int4-kernels"],
    }[variant]
    return [
        FAIRSEQ_GENERATE, data, "--user-dir", PLUGIN_DIR, *flags, "--path", checkpoint,
        "--gen-subset", "test", "--cpu", "--beam", beam, "--batch-size", batch_size,
        "--max-len-a", "0", "--max-len-b", length, "--min-len", length, "--num-workers", "0",
        "--quiet", "--no-progress-bar",
    ]


def memory_figures(output):
    """{accounted_mb, runtime_mb} of the plugin's ``compressed {json}`` line (None where it printed none, as stock
    fairseq does): the bytes compression accounts, and those of the weights as they run."""
    figures = compressed_figures(output) or {}
    return {"accounted_mb": figures.get("compressed_mb"), "runtime_mb": figures.get("runtime_mb"),
            "fp32_mb": figures.get("fp32_mb")}


def parse_translated(output, length):
    """{sentences, tokens, seconds, tokens_per_s} of fairseq-generate's ``Translated N sentences (T tokens) in S s
    (x sentences/s, y tokens/s)`` line: tokens/s as fairseq computes it from its unrounded timer (a fast run prints
    0.0 s). ValueError when the line is missing or the tokens are not ``length`` + </s> per sentence."""
    try:
        sentences, tokens, seconds, _, tokens_per_s = translated(output)
    except AnalysisError as error:
        raise ValueError(str(error)) from None
    expected = sentences * (length + 1)
    if tokens != expected:
        raise ValueError(f"{tokens} tokens for {sentences} sentences, expected {expected} (fixed length)")
    return {"sentences": sentences, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens_per_s}


def ratios_to(result, variant, baseline):
    """Per round, tokens/s of ``variant`` over that of ``baseline`` in the same round ([] if baseline not run)."""
    if baseline not in result["variants"]:
        return []
    return [r[variant]["tokens_per_s"] / r[baseline]["tokens_per_s"] for r in result["rounds"]]


def summarize(result, baseline="fp32", peer="ct2_int8"):
    """The table rows of one arch's rounds: tokens/s per round, ratios to ``baseline`` and their median, median
    ratio to ``peer``."""
    rows = []
    for variant in result["variants"]:
        speeds = [r[variant]["tokens_per_s"] for r in result["rounds"]]
        ratios, to_peer = ratios_to(result, variant, baseline), ratios_to(result, variant, peer)
        to_int8 = ratios_to(result, variant, "int8")
        peaks = [r[variant]["peak_rss_mb"] for r in result["rounds"] if r[variant].get("peak_rss_mb")]
        last = result["rounds"][-1][variant]
        rows.append({
            "arch": result["arch"], "variant": variant,
            "tokens_per_s": [round(s, 1) for s in speeds],
            "ratio_to_fp32": [round(x, 2) for x in ratios],
            "median_ratio": round(statistics.median(ratios), 2) if ratios else None,
            "median_ratio_to_ct2_int8": round(statistics.median(to_peer), 2) if to_peer else None,
            "median_ratio_to_int8": round(statistics.median(to_int8), 2) if to_int8 else None,
            "peak_rss_mb": round(statistics.median(peaks)) if peaks else None,
            "accounted_mb": last.get("accounted_mb"), "runtime_mb": last.get("runtime_mb"),
        })
    return rows
