"""The compression flags, one dataclass mixed into the config of every ``compressed_*`` task, and what they mean.

fairseq turns each field into a command-line flag (``prune_sparsity`` -> ``--prune-sparsity``) and stores it in the
checkpoint's ``cfg.task``, which is what lets ``fairseq-validate`` override it later. Every default means "off", so
a compressed task with no flags is the stock task. Booleans all default to False: fairseq turns a True-default bool
into a ``store_false`` flag whose name says the opposite of what it does.

The choices and the defaults are the core's (CompressionSpec, PruningSchedule): this file maps them to flags and
the flags back to the core's objects (``compression_spec``, ``pruning_schedule``). The checks of the flags live in
compression_checks.py, which imports this module (never the other way round).
"""
from dataclasses import dataclass, field, fields

from fairseq.dataclass import ChoiceEnum, FairseqDataclass

from fairseq_ext.compression import CompressionSpec, PruningSchedule
from fairseq_ext.compression.int8 import ENGINE_CHOICES
from fairseq_ext.compression.schedules import SCHEDULES
from fairseq_ext.compression.methods import GRANULARITIES, PRUNE_METHODS, PRUNE_PATTERNS, QUANT_METHODS
from fairseq_ext.compression.spec import QUANTIZED_BITS, SCHEMES, SCOPES

SPEC = CompressionSpec()
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
# The inference-speed flags (inference_speed.py): they act on a loaded checkpoint, after the spec's compression.
SPEED_FIELDS = ("prune_heads", "prune_ffn", "int8_kernels", "int8_engine", "int4_kernels")


def flag(name):
    """The command-line spelling of a config field."""
    return "--" + name.replace("_", "-")


def value(cfg, name):
    """A field's value as plain Python (ChoiceEnum values are StrEnums in a live config)."""
    v = getattr(cfg, name, DEFAULTS[name])
    return str(v) if name in CHOICE_FIELDS else v


def compression_spec(cfg, sparsity=None):
    """The core's spec for a task config; ``sparsity`` replaces the target (the schedule's value while training).
    --quant-group-size reaches the spec only with --quant-granularity group: elsewhere it is an unused flag (a
    warning, as for the other flags that cannot act), not an error."""
    granularity = value(cfg, "quant_granularity")
    return CompressionSpec(
        sparsity=value(cfg, "prune_sparsity") if sparsity is None else sparsity,
        scope=value(cfg, "prune_scope"),
        prune_embeddings=bool(value(cfg, "prune_embeddings")),
        bits=int(value(cfg, "quant_bits")),
        scheme=value(cfg, "quant_scheme"),
        granularity=granularity,
        quantize_embeddings=not value(cfg, "quant_skip_embeddings"),
        prune_method=value(cfg, "prune_method"),
        prune_pattern=value(cfg, "prune_pattern"),
        quant_method=value(cfg, "quant_method"),
        group_size=value(cfg, "quant_group_size") if granularity == "group" else 0,
    )


def pruning_schedule(cfg):
    """The core's schedule for a task config."""
    return PruningSchedule(
        schedule=value(cfg, "prune_schedule"),
        target=value(cfg, "prune_sparsity"),
        start=value(cfg, "prune_start_update"),
        end=value(cfg, "prune_end_update"),
        every=value(cfg, "prune_every"),
        fraction=value(cfg, "prune_fraction"),
    )


def speed_flags(cfg):
    """The inference-speed flags as a ``{field: plain value}`` dict."""
    return {name: value(cfg, name) for name in SPEED_FIELDS}


def pruning_on(cfg):
    return value(cfg, "prune_sparsity") > 0


def quantization_on(cfg):
    return value(cfg, "quant_bits") in QUANTIZED_BITS


def compression_on(cfg):
    return pruning_on(cfg) or quantization_on(cfg)


def calibration_on(cfg):
    """Whether compression reads calibration data: a calibrated method or the 2:4 pattern, pruning or quantizing."""
    return compression_spec(cfg).calibrated


