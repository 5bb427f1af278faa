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
    tokens_per_s, latency_ms                   fairseq-generate's decoding speed: tokens/s, and ms per sentence
"""
import json
import os
from pathlib import Path

from . import AnalysisError

FIELDS = {
    "model": str, "checkpoint": str, "params": int, "method": str, "sparsity": float, "bits": int,
    "compressed_mb": float, "fp32_mb": float, "metric": str, "value": float, "higher_is_better": bool,
    "subset": str, "seconds": float,
}
OPTIONAL_FIELDS = {"prune_heads": float, "prune_ffn": float, "int8": bool, "tokens_per_s": float, "latency_ms": float}
SPEED_DEFAULTS = {"prune_heads": 0.0, "prune_ffn": 0.0, "int8": False}
METHODS = ("dense", "prune", "quant", "prune+quant", "structured", "int8", "structured+int8")
FULL_PRECISION_BITS = 32


def method_of(sparsity, bits, prune_heads=0.0, prune_ffn=0.0, int8=False):
    """dense, or the compression methods in use joined by '+': prune, quant, structured, int8."""
    used = [("prune", sparsity > 0), ("quant", bits < FULL_PRECISION_BITS),
            ("structured", prune_heads > 0 or prune_ffn > 0), ("int8", bool(int8))]
    return "+".join(name for name, on in used if on) or "dense"


def speed_settings(record):
    """(prune_heads, prune_ffn, int8) of a record or config, off where absent."""
    return tuple(record.get(name, default) for name, default in SPEED_DEFAULTS.items())


def record_method(record):
    return method_of(record["sparsity"], record["bits"], *speed_settings(record))


def level_label(record):
    """How a config reads in a table or a plot: "dense", "50% pruned", "4-bit", "50% pruned + 4-bit",
    "25% heads + 50% FFN removed", "int8 kernels"."""
    heads, ffn, int8 = speed_settings(record)
    parts = []
    if record["sparsity"] > 0:
        parts.append(f"{record['sparsity']:.0%} pruned")
    if record["bits"] < FULL_PRECISION_BITS:
        parts.append(f"{record['bits']}-bit")
    removed = [f"{fraction:.0%} {what}" for fraction, what in ((heads, "heads"), (ffn, "FFN")) if fraction > 0]
    if removed:
        parts.append(" + ".join(removed) + " removed")
    if int8:
        parts.append("int8 kernels")
    return " + ".join(parts) or "dense"


def config_key(record):
    """What makes two records the same evaluation, so a resumed sweep skips it."""
    heads, ffn, int8 = speed_settings(record)
    return (record["model"], record["checkpoint"], round(record["sparsity"], 6), record["bits"], record["subset"],
            round(heads, 6), round(ffn, 6), bool(int8))


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


def append_record(path, record):
    """Atomic: the file with the new line is written next to it and renamed over it, so a sweep killed mid-write
    leaves every earlier line intact and no torn last line (which would stop the resumed sweep)."""
    check_record(record, "sweep record")
    path = Path(path)
    previous = path.read_text() if path.exists() else ""
    if previous and not previous.endswith("\n"):
        previous += "\n"
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w") as out:
        out.write(previous + json.dumps(record) + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def models_by_size(records):
    """Model names, smallest first, with their parameter counts."""
    params = {record["model"]: record["params"] for record in records}
    return sorted(params.items(), key=lambda item: (item[1], item[0]))
