"""The checks of the compression flags: every problem at once, in the user's vocabulary, at start-up.

``check_compression_config`` validates the flags as a whole and reports every problem at once, naming flags and
allowed values, not the core's argument names: the spec's own checks come from CompressionSpec.problems, told the
flag spelling of each option (SPEC_OPTION_FIELDS); only what the core cannot know (schedule, training, calibration
data, speed flags, a packed file against the flags) is checked here.
"""
import logging
import os
from pathlib import Path

import torch

from fairseq_ext.compression.int4 import KERNEL_GROUP_SIZES, MAX_BITS, int4_kernel_problem
from fairseq_ext.compression.int8 import ENGINE_CHOICES, int8_engine
from fairseq_ext.compression.methods import PRUNE_METHODS, QUANT_METHODS
from fairseq_ext.compression.quantization import group_sizes_that_fit, quantizable_weights
from fairseq_ext.compression.spec import QUANTIZED_BITS, CompressionSpec
from fairseq_ext.compression.tensors import nonfinite_tensors

from .compression_config import (
    COMPRESSION_FIELDS, DEFAULTS, SPEC_OPTION_FIELDS, calibration_on, compression_spec, flag, pruning_on,
    quantization_on, value,
)

logger = logging.getLogger(__name__)

INT4_BITS = tuple(b for b in QUANTIZED_BITS if b <= MAX_BITS)
SEED_LIMIT = 2 ** 32  # numpy.random.RandomState takes seeds in [0, 2**32)


def compression_problems(cfg):
    """Every contradiction among the flags, each naming the flag(s) and what is allowed; [] when consistent."""
    v = {name: value(cfg, name) for name in COMPRESSION_FIELDS}
    problems = compression_spec(cfg).problems({option: flag(name) for option, name in SPEC_OPTION_FIELDS.items()})
    bits = v["quant_bits"]
    if v["quant_aware"] and bits not in QUANTIZED_BITS:
        problems.append(f"--quant-aware needs --quant-bits 2..8 to train for (got --quant-bits {bits})")
    start, end, every = v["prune_start_update"], v["prune_end_update"], v["prune_every"]
    if start < 0:
        problems.append(f"--prune-start-update must be >= 0 (got {start})")
    if end < 0:
        problems.append(f"--prune-end-update must be >= 0 (got {end})")
    elif end and end < start:
        problems.append(f"the pruning schedule ends before it starts: --prune-end-update {end} < "
                        f"--prune-start-update {start}")
    if every < 1:
        problems.append(f"--prune-every must be >= 1 (got {every})")
    schedule, fraction = v["prune_schedule"], v["prune_fraction"]
    if schedule == "gradual" and end <= start:
        problems.append(f"--prune-schedule gradual needs --prune-end-update N > --prune-start-update {start} "
                        f"(got --prune-end-update {end})")
    if schedule == "iterative" and not 0.0 < fraction < 1.0:
        problems.append(f"--prune-schedule iterative needs --prune-fraction in (0, 1) (got {fraction})")
    if schedule != "iterative" and fraction != 0.0:
        problems.append(f"--prune-fraction {fraction} only applies to --prune-schedule iterative "
                        f"(got --prune-schedule {schedule})")
    if not (isinstance(v["calib_samples"], int) and v["calib_samples"] >= 1):
        problems.append(f"--calib-samples must be >= 1 (got {v['calib_samples']})")
    seed = v["calib_seed"]
    if not (isinstance(seed, int) and 0 <= seed < SEED_LIMIT):
        problems.append(f"--calib-seed must be an integer in [0, 2**32), numpy's seeds (got {seed})")
    subset = v["calib_subset"]
    if not (isinstance(subset, str) and subset):
        problems.append(f"--calib-subset must name a data subset, e.g. train or valid (got {subset!r})")
    elif compression_spec(cfg).needs_calibration_data:
        subsets = data_subsets(getattr(cfg, "data", None))
        if subsets and subset not in subsets:
            problems.append(f"--calib-subset {subset}: the data folder has no such subset; it has "
                            f"{', '.join(subsets)}")
    problems += speed_problems(v)
    return problems


def data_subsets(data):
    """The subsets of a binarized fairseq data folder (``<subset>.*.bin`` files, or one folder down, as sentence
    prediction keeps its inputs); () when ``data`` is no local folder, or holds no binarized files."""
    root = Path(str(data or "").split(os.pathsep)[0])  # fairseq separates shards by ':' and reads the first
    if not str(data or "") or not root.is_dir():
        return ()
    return tuple(sorted({path.name.split(".")[0] for path in (*root.glob("*.bin"), *root.glob("*/*.bin"))}))


def check_group_size_fits(cfg, model):
    """ValueError unless --quant-group-size tiles the rows of every matrix the flags quantize in this model (known
    once it is built, before its weights load): one line, naming the sizes that would."""
    spec = compression_spec(cfg)
    if not (spec.quantizes and spec.granularity == "group" and spec.group_size > 0):
        return
    widths = {name: weight.shape[-1] for name, weight in quantizable_weights(model, spec.quantize_embeddings).items()}
    misfits = [name for name, width in widths.items() if width % spec.group_size]
    if misfits:
        raise ValueError(
            f"--quant-group-size {spec.group_size} does not divide the width of {len(misfits)} of the {len(widths)} "
            f"quantized matrices (e.g. {misfits[0]}, {widths[misfits[0]]} columns); the sizes that divide every "
            f"width: {', '.join(map(str, group_sizes_that_fit(widths.values())))}")


def check_finite_weights(model):
    """ValueError naming every weight of a loaded checkpoint that holds NaN or infinite values: no compressor can
    make sense of them, and the fault is the checkpoint's (damaged, or saved after training diverged)."""
    bad = nonfinite_tensors(dict(model.named_parameters()))
    if bad:
        named = ", ".join(f"{name} ({count} of {model.get_parameter(name).numel()} entries)"
                          for name, count in bad.items())
        raise ValueError(f"the checkpoint's weights hold NaN or infinite values: {named}; the checkpoint is damaged "
                         "or was saved after training diverged: load another one (compression cannot repair it)")


def refuse_calibration_in_training(cfg):
    """fairseq-train prunes by magnitude (unstructured, on its schedule) and quantizes by round-to-nearest: a
    calibrated method or the 2:4 pattern there would be silently replaced, so it is refused instead."""
    if compression_spec(cfg).calibrated:
        named = [f"{flag(n)} {value(cfg, n)}" for n in ("prune_method", "prune_pattern", "quant_method")
                 if value(cfg, n) != DEFAULTS[n]]
        raise ValueError(f"{', '.join(named)}: fairseq-train prunes by magnitude (unstructured) and quantizes by "
                         "round-to-nearest; the calibrated methods and the 2:4 pattern act on a loaded checkpoint "
                         "(fairseq-generate, fairseq-validate, fairseq-interactive, scripts/pack_checkpoint.py): "
                         "drop them from this command")


def speed_problems(v):
    """Problems of the speed flags, from a ``{field: plain value}`` dict; [] when fine."""
    problems = []
    for name, what in (("prune_heads", "attention heads removed from every attention module"),
                       ("prune_ffn", "FFN neurons removed from every layer")):
        f = v[name]
        if not (isinstance(f, (int, float)) and 0.0 <= f < 1.0):
            problems.append(f"{flag(name)} must be in [0, 1) (the fraction of {what}; 0: off), got {f}")
    problems += int4_problems(v)
    engine = v["int8_engine"]
    if engine not in ENGINE_CHOICES:
        problems.append(f"--int8-engine must be one of {', '.join(ENGINE_CHOICES)} (got {engine})")
    elif v["int8_kernels"] and int8_engine(engine) is None:
        problems.append(f"--int8-engine {engine} is not available in this torch build (it has "
                        f"{', '.join(torch.backends.quantized.supported_engines)}); use --int8-engine auto")
    return problems


def int4_problems(v):
    """Problems of --int4-kernels, from a ``{field: plain value}`` dict; [] when fine (or off). Widths that the
    kernels' groups do not divide are known only with the model: the load reports them."""
    if not v["int4_kernels"]:
        return []
    problems = []
    missing = int4_kernel_problem()
    if missing:
        problems.append(f"--int4-kernels: {missing}; use --int8-kernels, or simulated --quant-bits without either")
    bits = v["quant_bits"]
    if bits in QUANTIZED_BITS and bits not in INT4_BITS:  # unquantized: a packed file may hold the codes
        problems.append(f"--int4-kernels runs weights quantized at --quant-bits {', '.join(map(str, INT4_BITS))} "
                        f"(got --quant-bits {bits}); for 5..8 bits use --int8-kernels")
    if v["int8_kernels"]:
        problems.append("--int4-kernels and --int8-kernels both replace the Linears: choose one")
    size = v["quant_group_size"]
    if v["quant_granularity"] == "group" and isinstance(size, int) and size > 0 and size % KERNEL_GROUP_SIZES[-1]:
        problems.append(f"--int4-kernels scales groups of {', '.join(map(str, sorted(KERNEL_GROUP_SIZES)))} columns "
                        f"(or a multiple): --quant-group-size {size} is not a multiple of {KERNEL_GROUP_SIZES[-1]}")
    shrunk = [flag(n) for n in ("prune_heads", "prune_ffn") if isinstance(v[n], (int, float)) and v[n] > 0]
    if shrunk:
        problems.append(f"--int4-kernels runs the quantizer's groups of columns, which {' and '.join(shrunk)} would "
                        "cut through: drop one or the other")
    return problems


def unused_flags(cfg):
    """Flags set away from their default that cannot act with the rest (legal, e.g. the dense point of a sweep)."""
    v = {name: value(cfg, name) for name in COMPRESSION_FIELDS}
    unused = []
    if not pruning_on(cfg):
        unused += [n for n in ("prune_scope", "prune_embeddings", "prune_method", "prune_pattern", "prune_schedule",
                               "prune_start_update", "prune_end_update", "prune_every", "prune_fraction")
                   if v[n] != DEFAULTS[n]]
    if not quantization_on(cfg):
        unused += [n for n in ("quant_scheme", "quant_granularity", "quant_method", "quant_skip_embeddings")
                   if v[n] != DEFAULTS[n]]
    group_size_acts = quantization_on(cfg) and v["quant_granularity"] == "group"
    if not group_size_acts and v["quant_group_size"] != DEFAULTS["quant_group_size"]:
        unused.append("quant_group_size")
    if not calibration_on(cfg):
        unused += [n for n in ("calib_subset", "calib_samples", "calib_seed") if v[n] != DEFAULTS[n]]
    if not v["int8_kernels"] and v["int8_engine"] != DEFAULTS["int8_engine"]:
        unused.append("int8_engine")
    return unused


def fitted_names(methods):
    """The calibrated methods of a table, as a flag's values read: "wanda|sparsegpt"."""
    return "|".join(name for name, method in methods.items() if method.calibrated)


def check_compression_config(cfg):
    """Raise one ValueError listing every problem; warn (never ignore silently) about flags that cannot act."""
    problems = compression_problems(cfg)
    if problems:
        raise ValueError(
            f"invalid compression flags ({len(problems)} problem{'s' if len(problems) > 1 else ''}):\n  "
            + "\n  ".join(problems)
        )
    unused = unused_flags(cfg)
    if unused:
        logger.warning(
            "%s ha%s no effect: %s",
            ", ".join(flag(n) for n in unused), "ve" if len(unused) > 1 else "s",
            "--prune-* flags act only with --prune-sparsity > 0, --quant-* flags only with --quant-bits 2..8, "
            "--quant-group-size only with --quant-granularity group, --calib-* flags only with a calibrated method "
            f"(--prune-method {fitted_names(PRUNE_METHODS)}, --prune-pattern 2:4, --quant-method "
            f"{fitted_names(QUANT_METHODS)}), --int8-engine only with --int8-kernels",
        )


def speed_on(v):
    return bool(v["int8_kernels"]) or bool(v["int4_kernels"]) or v["prune_heads"] > 0 or v["prune_ffn"] > 0


def refuse_in_training(v):
    if speed_on(v):
        on = [flag(n) for n in ("prune_heads", "prune_ffn", "int8_kernels", "int4_kernels") if v[n]]
        raise ValueError(f"{', '.join(on)} act{'s' if len(on) == 1 else ''} on a loaded checkpoint (fairseq-generate, "
                         "fairseq-interactive, fairseq-validate), not in fairseq-train: drop them from this command")


# What fixes the weights a packed file holds: flags that ask for other values cannot be honoured from its contents.
STORED_GRID = ("sparsity", "bits", "scheme", "granularity", "group_size")


def check_packed_file(header, flags_spec, int4_kernels):
    """ValueError unless a packed file (its header) can run as the command line's flags ask: the compression flags,
    if any, those it was packed with (its weights are compressed already), and with --int4-kernels its weights at
    2..4 bits."""
    spec = CompressionSpec.from_dict(header["spec"])
    if int4_kernels and not (spec.quantizes and spec.bits <= MAX_BITS):
        raise ValueError(f"--int4-kernels runs weights quantized at 2..{MAX_BITS} bits; this packed file holds "
                         f"{spec.bits}-bit weights: use --int8-kernels, or pack it with --quant-bits 2..{MAX_BITS}")
    if flags_spec.enabled:
        differ = [f"{name} {getattr(flags_spec, name)} (the file: {getattr(spec, name)})" for name in STORED_GRID
                  if getattr(flags_spec, name) != getattr(spec, name)]
        if differ and int4_kernels:
            raise ValueError("--int4-kernels runs a packed file's own codes; the compression flags ask for "
                             + ", ".join(differ) + ": drop the --prune-*/--quant-* flags, or give the file's")
        if differ:
            raise ValueError("a packed file holds its weights compressed already; the compression flags ask for "
                             + ", ".join(differ) + ": drop the --prune-*/--quant-* flags, or give the file's")
