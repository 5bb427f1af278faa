"""The compression sweep's results file: one JSON object per line, one line per (model, compression config).

scripts/sweep.py appends to it; analyze.py reads it. The fields (a record may carry more, e.g. `latency_ms`
where latency was measured):

    model, checkpoint, params                  which model (a name, its checkpoint, its parameter count)
    method, sparsity, bits                     dense | prune | quant | prune+quant; fraction pruned; bits (32 = off)
    compressed_mb, fp32_mb                     inference memory of the weights, compressed and in fp32
    metric, value, higher_is_better, subset    e.g. bleu 27.3 True test
    seconds                                    how long the evaluation took

and, optional (absent = off / not measured):

    prune_heads, prune_ffn, int8               structured pruning fractions and real int8 kernels (--prune-heads,
                                               --prune-ffn, --int8-kernels); compressed_mb is then the memory of
                                               the weights as they run: the shrunk fp32 matrices, int8 codes
    int4                                       the config ran on torch's int4 kernels (--int4-kernels, sweep.py
                                               --int4-kernels): the same codes, really 4-bit at run time
    runtime_mb, peak_rss_mb                    the memory of the weights as they ran (every distinct tensor
                                               storage: float32 for a simulated config) and the peak resident
                                               memory of the whole fairseq process
    tokens_per_s, latency_ms                   fairseq-generate's decoding speed: tokens/s, and ms per sentence
    prune_method, quant_method                 which pruning (magnitude | wanda | sparsegpt; absent: magnitude) and
                                               quantization (rtn: round-to-nearest | gptq; absent: rtn), present
                                               only where the config prunes / quantizes with another method
    calibration_samples, calibration_seconds   calibrated configs (Wanda, SparseGPT, GPTQ): how many training
                                               samples they calibrated on, and how long that took (where logged)
    examples                                   how many examples (sentences) the value was measured on
    hypotheses, references                     translation: the detokenized hypotheses, one line per sentence in
                                               the subset's order, and the references, as paths relative to the
                                               folder of the sweep file (what the significance tests read)
"""
import json
import os
import re
from pathlib import Path

from fairseq_ext.compression.atomic_files import write_atomically as write_bytes_atomically
from fairseq_ext.compression.methods import (
    CALIBRATED_METHODS, DEFAULT_PRUNE_METHOD, DEFAULT_QUANT_METHOD, PRUNE_METHODS, QUANT_METHODS,
)
from fairseq_ext.compression.methods import METHODS as COMPRESSORS

from . import AnalysisError

FIELDS = {
    "model": str, "checkpoint": str, "params": int, "method": str, "sparsity": float, "bits": int,
    "compressed_mb": float, "fp32_mb": float, "metric": str, "value": float, "higher_is_better": bool,
    "subset": str, "seconds": float,
}
OPTIONAL_FIELDS = {
    "prune_heads": float, "prune_ffn": float, "int8": bool, "tokens_per_s": float, "latency_ms": float,
    "prune_method": str, "quant_method": str, "calibration_samples": int, "calibration_seconds": float,
    "examples": int, "hypotheses": str, "references": str, "int4": bool, "runtime_mb": float, "peak_rss_mb": float,
}
SPEED_DEFAULTS = {"prune_heads": 0.0, "prune_ffn": 0.0, "int8": False, "int4": False}
# The compressors (--prune-method, --quant-method) come from the method table; the default of each (the paper's)
# a record leaves out.
COMPRESSOR_DEFAULTS = {"prune_method": DEFAULT_PRUNE_METHOD, "quant_method": DEFAULT_QUANT_METHOD}
# Dense belongs to every family; the speed configs (structured pruning, int8 kernels) to none.
FAMILIES = {
    "paper": "the paper's compressors (magnitude pruning, round-to-nearest quantization)",
    "calibrated": "calibrated compressors (SparseGPT or Wanda pruning, GPTQ quantization)",
}
METHODS = ("dense", "prune", "quant", "prune+quant", "structured", "int8", "structured+int8")
FULL_PRECISION_BITS = 32


def method_of(sparsity, bits, prune_heads=0.0, prune_ffn=0.0, int8=False):
    """dense, or the compression methods in use joined by '+': prune, quant, structured, int8."""
    used = [("prune", sparsity > 0), ("quant", bits < FULL_PRECISION_BITS),
            ("structured", prune_heads > 0 or prune_ffn > 0), ("int8", bool(int8))]
    return "+".join(name for name, on in used if on) or "dense"


def speed_settings(record):
    """(prune_heads, prune_ffn, int8, int4) of a record or config, off where absent."""
    return tuple(record.get(name, default) for name, default in SPEED_DEFAULTS.items())


def record_method(record):
    heads, ffn, int8, _ = speed_settings(record)  # int4 kernels run the very quantization the method names
    return method_of(record["sparsity"], record["bits"], heads, ffn, int8)


def compressors(record):
    """(prune_method, quant_method) of a record or config, the defaults where absent."""
    return tuple(record.get(name, default) for name, default in COMPRESSOR_DEFAULTS.items())


def methods_in_use(record):
    """The pruning and quantization methods that compress this config: e.g. ("sparsegpt", "gptq"), ("rtn",), ()."""
    prune_method, quant_method = compressors(record)
    pruned, quantized = record["sparsity"] > 0, record["bits"] < FULL_PRECISION_BITS
    return (prune_method,) * pruned + (quant_method,) * quantized


def is_calibrated(record):
    """Whether a method that needs calibration samples (Wanda, SparseGPT, GPTQ) compresses the config."""
    return any(method in CALIBRATED_METHODS for method in methods_in_use(record))


def compressor_family(record):
    """"calibrated" where a calibrated method compresses the config (also beside magnitude pruning or
    round-to-nearest), "paper" where only magnitude pruning and round-to-nearest do; None for dense, which belongs
    to every family, and for the speed configs (structured pruning, int8 kernels), which belong to none."""
    if record["method"] not in ("prune", "quant", "prune+quant"):
        return None
    return "calibrated" if is_calibrated(record) else "paper"


def level_label(record):
    """How a config reads in a table or a plot: "dense", "50% pruned", "4-bit", "50% pruned + 4-bit",
    "25% heads + 50% FFN removed", "int8 kernels", "4-bit on int4 kernels"; with other compressors than the
    paper's, their names: "70% pruned (SparseGPT)", "2-bit (GPTQ)", "50% pruned + 4-bit (SparseGPT+GPTQ)"."""
    heads, ffn, int8, int4 = speed_settings(record)
    parts = []
    if record["sparsity"] > 0:
        parts.append(f"{record['sparsity']:.0%} pruned")
    if record["bits"] < FULL_PRECISION_BITS:
        parts.append(f"{record['bits']}-bit" + (" on int4 kernels" if int4 else ""))
    removed = [f"{fraction:.0%} {what}" for fraction, what in ((heads, "heads"), (ffn, "FFN")) if fraction > 0]
    if removed:
        parts.append(" + ".join(removed) + " removed")
    if int8:
        parts.append("int8 kernels")
    label = " + ".join(parts) or "dense"
    used = methods_in_use(record)
    if any(method not in COMPRESSOR_DEFAULTS.values() for method in used):
        label += " (" + "+".join(COMPRESSORS[method].display_name for method in used) + ")"
    return label


def config_slug(record):
    """The config's label as a file name: "dense", "70pct-pruned-sparsegpt", "50pct-pruned-4-bit-sparsegpt-gptq"."""
    return re.sub(r"[^a-z0-9]+", "-", level_label(record).replace("%", "pct").lower()).strip("-")


def config_key(record):
    """What makes two records the same evaluation, so a resumed sweep skips it."""
    heads, ffn, int8, int4 = speed_settings(record)
    return (record["model"], record["checkpoint"], round(record["sparsity"], 6), record["bits"], record["subset"],
            round(heads, 6), round(ffn, 6), bool(int8), bool(int4), *compressors(record))


def check_record(record, where):
    if not isinstance(record, dict):
        raise AnalysisError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [name for name in FIELDS if name not in record]
    if missing:
        raise AnalysisError(f"{where}: missing {', '.join(missing)}")
    for name, kind in {**FIELDS, **{k: v for k, v in OPTIONAL_FIELDS.items() if k in record}}.items():
        value = record[name]
        # JSON has one number type: an int is a fine float, but a bool is no number.
        fits = isinstance(value, kind) or (kind is float and isinstance(value, int))
        if not fits or (kind is not bool and isinstance(value, bool)):
            raise AnalysisError(f"{where}: {name}={value!r} is not a {kind.__name__}")
    prune_method, quant_method = compressors(record)
    for name, value, known in (("prune_method", prune_method, PRUNE_METHODS),
                               ("quant_method", quant_method, QUANT_METHODS)):
        if value not in known:
            raise AnalysisError(f"{where}: {name}={value!r} is not one of {', '.join(known)}")
    # A method of a compression the config does not apply would make a second key for the same evaluation.
    if prune_method != COMPRESSOR_DEFAULTS["prune_method"] and record["sparsity"] == 0:
        raise AnalysisError(f"{where}: prune_method={prune_method!r} on a config that prunes nothing (sparsity 0)")
    if quant_method != COMPRESSOR_DEFAULTS["quant_method"] and record["bits"] >= FULL_PRECISION_BITS:
        raise AnalysisError(f"{where}: quant_method={quant_method!r} on a config that quantizes nothing "
                            f"(bits {record['bits']})")
    if record["method"] != record_method(record):
        raise AnalysisError(f"{where}: method {record['method']!r} does not match its config "
                            f"({level_label(record)}: {record_method(record)})")


def load_records(path, *, option):
    """Every record of an existing sweep file, checked (none for an empty file)."""
    records = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise AnalysisError(f"{option} {path}:{number}: not JSON ({error})") from None
        check_record(record, f"{option} {path}:{number}")
        records.append(record)
    return records


def read_sweep(path, *, option="--sweep"):
    """The records of a sweep to analyse: at least one, and one metric and subset, since they are compared."""
    path = Path(path)
    if not path.is_file():
        raise AnalysisError(f"{option} {path}: no such file (scripts/sweep.py writes it)")
    records = load_records(path, option=option)
    if not records:
        raise AnalysisError(f"{option} {path}: no results yet")
    for field in ("metric", "subset"):
        values = sorted({record[field] for record in records})
        if len(values) > 1:
            raise AnalysisError(f"{option} {path}: mixes {field}s {', '.join(values)}; results are only "
                                f"comparable within one {field} (write one sweep file per task and subset)")
    return records


def write_atomically(path, text):
    """The text file written atomically (fairseq_ext.compression.atomic_files): a reader, or a process killed
    mid-write, never sees half of it."""
    write_bytes_atomically(path, [text.encode("utf-8")])


def append_record(path, record):
    """Atomic: a sweep killed mid-write leaves every earlier line intact and no torn last line (which would stop
    the resumed sweep)."""
    check_record(record, "sweep record")
    path = Path(path)
    previous = path.read_text() if path.exists() else ""
    if previous and not previous.endswith("\n"):
        previous += "\n"
    write_atomically(path, previous + json.dumps(record) + "\n")


def merge_sweeps(parts, out, *, option="--sweep"):
    """Several sweep files as one (the recipes sweep each model into a file of its own), their records in order,
    each path to hypotheses and references made relative to the new file's folder."""
    out = Path(out)
    lines = []
    for part in map(Path, parts):
        for record in load_records(part, option=option):
            for field in ("hypotheses", "references"):
                if field in record:
                    record[field] = os.path.relpath(part.parent / record[field], out.parent)
            lines.append(json.dumps(record) + "\n")
    write_atomically(out, "".join(lines))


def models_by_size(records):
    """Model names, smallest first, with their parameter counts."""
    params = {record["model"]: record["params"] for record in records}
    return sorted(params.items(), key=lambda item: (item[1], item[0]))
