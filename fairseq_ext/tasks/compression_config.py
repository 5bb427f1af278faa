"""The compression flags, one dataclass mixed into the config of every ``compressed_*`` task.

fairseq turns each field into a command-line flag (``prune_sparsity`` -> ``--prune-sparsity``) and stores it in the
checkpoint's ``cfg.task``, which is what lets ``fairseq-validate`` override it later. Every default means "off", so
a compressed task with no flags is the stock task. Booleans all default to False: fairseq turns a True-default bool
into a ``store_false`` flag whose name says the opposite of what it does.

The choices and the defaults are the core's (CompressionSpec, PruningSchedule): this file maps them to flags.
``check_compression_config`` validates the flags as a whole at start-up and reports every problem at once, in the
user's vocabulary (flag names and allowed values), not the core's argument names: the spec's own checks come from
CompressionSpec.problems, told the flag spelling of each option (SPEC_OPTION_FIELDS); only what the core cannot know
(schedule, training, calibration data, speed flags) is checked here.
"""
import logging
from dataclasses import dataclass, field, fields

import torch
from fairseq.dataclass import ChoiceEnum, FairseqDataclass

from fairseq_ext.compression import CompressionSpec, PruningSchedule
from fairseq_ext.compression.int4 import KERNEL_GROUP_SIZES, MAX_BITS, int4_kernel_problem
from fairseq_ext.compression.int8 import ENGINE_CHOICES, int8_engine
from fairseq_ext.compression.schedules import SCHEDULES
from fairseq_ext.compression.spec import (
    GRANULARITIES,
    PRUNE_METHODS,
    PRUNE_PATTERNS,
    QUANT_METHODS,
    QUANTIZED_BITS,
    SCHEMES,
    SCOPES,
)

logger = logging.getLogger(__name__)

SPEC = CompressionSpec()
INT4_BITS = tuple(b for b in QUANTIZED_BITS if b <= MAX_BITS)
SCHEDULE = PruningSchedule()


@dataclass
class CompressionConfig(FairseqDataclass):
    prune_sparsity: float = field(
        default=SPEC.sparsity,
        metadata={"help": "fraction of the weights to zero by magnitude, 0 <= F < 1 (0: no pruning); the target of "
                          "--prune-schedule while training"},
    )
    prune_scope: ChoiceEnum(list(SCOPES)) = field(
        default=SPEC.scope,
        metadata={"help": "rank weights by magnitude across all pruned matrices (global) or within each (layer)"},
    )
    prune_embeddings: bool = field(
        default=SPEC.prune_embeddings, metadata={"help": "prune the embedding matrices too (by default they are kept dense)"}
    )
    prune_method: ChoiceEnum(list(PRUNE_METHODS)) = field(
        default=SPEC.prune_method,
        metadata={"help": "which weights to prune: smallest magnitude, wanda (smallest |weight| x input norm, Sun et "
                          "al. 2024) or sparsegpt (Frantar & Alistarh 2023, also updates the kept weights); wanda and "
                          "sparsegpt calibrate on --calib-samples of --calib-subset; evaluation only"},
    )
    prune_pattern: ChoiceEnum(list(PRUNE_PATTERNS)) = field(
        default=SPEC.prune_pattern,
        metadata={"help": "unstructured, or 2:4 (2 of every 4 consecutive weights of a row, with --prune-sparsity "
                          "0.5); evaluation only"},
    )
    prune_schedule: ChoiceEnum(list(SCHEDULES)) = field(
        default=SCHEDULE.schedule,
        metadata={"help": "while training: oneshot (all of --prune-sparsity at --prune-start-update), iterative "
                          "(--prune-fraction of the remaining weights every --prune-every updates), gradual "
                          "(cubic ramp from --prune-start-update to --prune-end-update, Zhu & Gupta 2017)"},
    )
    prune_start_update: int = field(default=SCHEDULE.start, metadata={"help": "update at which pruning starts while training"})
    prune_end_update: int = field(
        default=SCHEDULE.end, metadata={"help": "update at which the gradual schedule reaches --prune-sparsity (0: unset)"}
    )
    prune_every: int = field(default=SCHEDULE.every, metadata={"help": "updates between two pruning steps of the schedule"})
    prune_fraction: float = field(
        default=SCHEDULE.fraction,
        metadata={"help": "iterative schedule: fraction of the still-kept weights pruned at each step, 0 < F < 1"},
    )
    quant_bits: int = field(
        default=SPEC.bits, metadata={"help": "weight precision, 2..8 bits (16 or 32: no quantization)"}
    )
    quant_scheme: ChoiceEnum(list(SCHEMES)) = field(
        default=SPEC.scheme, metadata={"help": "quantization grid: symmetric around 0, or asymmetric (min..max)"}
    )
    quant_granularity: ChoiceEnum(list(GRANULARITIES)) = field(
        default=SPEC.granularity,
        metadata={"help": "one quantization scale per output channel (row), per tensor, or per group of "
                          "--quant-group-size columns of a row"},
    )
    quant_group_size: int = field(
        default=SPEC.group_size,
        metadata={"help": "columns per quantization group with --quant-granularity group (0: unset)"},
    )
    quant_method: ChoiceEnum(list(QUANT_METHODS)) = field(
        default=SPEC.quant_method,
        metadata={"help": "rtn (round-to-nearest) or gptq (Frantar et al. 2023: column by column, correcting the "
                          "columns not yet rounded; calibrates on --calib-samples of --calib-subset); evaluation only"},
    )
    quant_skip_embeddings: bool = field(
        default=not SPEC.quantize_embeddings, metadata={"help": "keep the embedding matrices in float (by default they are quantized)"}
    )
    quant_aware: bool = field(
        default=False,
        metadata={"help": "while training: quantization-aware training (forward and backward at --quant-bits, "
                          "float weights updated by the straight-through estimator)"},
    )
    # Calibration data of wanda, sparsegpt, gptq and the 2:4 pattern (evaluation only).
    calib_subset: str = field(default="train", metadata={"help": "data subset the calibration samples come from"})
    calib_samples: int = field(default=128, metadata={"help": "number of calibration samples (sentences)"})
    calib_seed: int = field(default=1, metadata={"help": "seed of the draw of the calibration samples"})
    # Inference speed (inference_speed.py): act on a loaded checkpoint, after the pruning/quantization above.
    prune_heads: float = field(
        default=0.0,
        metadata={"help": "structured pruning: remove this fraction of the attention heads of every attention module "
                          "(lowest L2 norm first; the q/k/v/out matrices shrink), 0 <= F < 1"},
    )
    prune_ffn: float = field(
        default=0.0,
        metadata={"help": "structured pruning: remove this fraction of the FFN neurons of every layer (lowest L2 "
                          "norm first; fc1/fc2 shrink), 0 <= F < 1"},
    )
    int8_kernels: bool = field(
        default=False,
        metadata={"help": "run every Linear with real int8 kernels (torch dynamic quantization: int8 weights, int8 "
                          "matmuls) on the CPU in fp32 (--cpu, no --fp16/--bf16); applied last"},
    )
    int4_kernels: bool = field(
        default=False,
        metadata={"help": "run every Linear and token embedding quantized at 2..4 bits (--quant-bits) on torch's CPU "
                          "int4 kernels, with the quantizer's own codes (bf16 activations in the matmuls); from a "
                          "packed .fxc the model is built straight into them; --cpu, no --fp16/--bf16"},
    )
    int8_engine: ChoiceEnum(ENGINE_CHOICES) = field(
        default="auto",
        metadata={"help": "quantized CPU backend of --int8-kernels: auto (onednn on AMX CPUs, else x86), x86, "
                          "fbgemm, onednn, qnnpack"},
    )


# The flags' fields, without the `_name` every FairseqDataclass carries.
COMPRESSION_FIELDS = tuple(f.name for f in fields(CompressionConfig) if f.name not in FairseqDataclass.__dataclass_fields__)
DEFAULTS = {f.name: f.default for f in fields(CompressionConfig) if f.name in COMPRESSION_FIELDS}
# ChoiceEnum fields: their values are StrEnums in a live config.
CHOICE_FIELDS = ("prune_scope", "prune_method", "prune_pattern", "prune_schedule", "quant_scheme", "quant_granularity",
                 "quant_method", "int8_engine")
# CompressionSpec option -> the config field (flag) that sets it. quantize_embeddings is left out: it is the negation
# of --quant-skip-embeddings, and compression_spec() always gives it a valid bool.
SPEC_OPTION_FIELDS = {
    "sparsity": "prune_sparsity", "scope": "prune_scope", "prune_embeddings": "prune_embeddings",
    "prune_method": "prune_method", "prune_pattern": "prune_pattern", "bits": "quant_bits", "scheme": "quant_scheme",
    "granularity": "quant_granularity", "group_size": "quant_group_size", "quant_method": "quant_method",
}


def flag(name):
    """The command-line spelling of a config field."""
    return "--" + name.replace("_", "-")


def value(cfg, name):
    """A field's value as plain Python (ChoiceEnum values are StrEnums in a live config)."""
    v = getattr(cfg, name, DEFAULTS[name])
    return str(v) if name in CHOICE_FIELDS else v


def spec_of(cfg):
    """compression_spec(cfg): the core's spec for these flags."""
    from .compression import compression_spec  # imported here: compression.py imports this module

    return compression_spec(cfg)


def pruning_on(cfg):
    return value(cfg, "prune_sparsity") > 0


def quantization_on(cfg):
    return value(cfg, "quant_bits") in QUANTIZED_BITS


def compression_on(cfg):
    return pruning_on(cfg) or quantization_on(cfg)


def calibration_on(cfg):
    """Whether compression reads calibration data: a calibrated method or the 2:4 pattern, pruning or quantizing."""
    return spec_of(cfg).calibrated


def compression_problems(cfg):
    """Every contradiction among the flags, each naming the flag(s) and what is allowed; [] when consistent."""
    v = {name: value(cfg, name) for name in COMPRESSION_FIELDS}
    problems = spec_of(cfg).problems({option: flag(name) for option, name in SPEC_OPTION_FIELDS.items()})
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
    if not (isinstance(v["calib_subset"], str) and v["calib_subset"]):
        problems.append(f"--calib-subset must name a data subset, e.g. train or valid (got {v['calib_subset']!r})")
    problems += speed_problems(v)
    return problems


def refuse_calibration_in_training(cfg):
    """fairseq-train prunes by magnitude (unstructured, on its schedule) and quantizes by round-to-nearest: a
    calibrated method or the 2:4 pattern there would be silently replaced, so it is refused instead."""
    if spec_of(cfg).calibrated:
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
            "(--prune-method wanda|sparsegpt, --prune-pattern 2:4, --quant-method gptq), --int8-engine only with "
            "--int8-kernels",
        )
