"""Which size and compression to deploy under a memory (and, where measured, latency) budget.

The answer comes with the paper's comparison: what the best uncompressed (dense 32-bit) model that fits the
same budget scores, and whether the difference is significant (significance.py) where the sweep kept what the
test needs.
"""
from dataclasses import dataclass

from . import AnalysisError
from .sweep_results import compressors, level_label
from .tables import number_text, params_text


@dataclass(frozen=True)
class Selection:
    max_mb: float
    max_ms: object  # float, or None for no latency budget
    best: object  # the best fitting record, or None when nothing fits
    best_dense: object  # the best fitting dense 32-bit record, or None
    smallest: dict  # the smallest record of all, to say how far off an unmet budget is
    smallest_dense: object


def rank(record):
    """Best first: higher (or lower) metric, then fewer MB, fewer parameters, and the config's name for a tie."""
    value = -record["value"] if record["higher_is_better"] else record["value"]
    return (value, record["compressed_mb"], record["params"], record["model"], record["sparsity"], -record["bits"],
            *compressors(record))


def select(records, max_mb, max_ms=None):
    if max_ms is not None:
        records = [r for r in records if isinstance(r.get("latency_ms"), (int, float))]
        if not records:
            raise AnalysisError("--max-ms: no result in the sweep has a measured latency (a latency_ms field)")
    fitting = [r for r in records
               if r["compressed_mb"] <= max_mb and (max_ms is None or r["latency_ms"] <= max_ms)]
    dense = [r for r in records if r["method"] == "dense"]
    return Selection(
        max_mb=max_mb,
        max_ms=max_ms,
        best=min(fitting, key=rank, default=None),
        best_dense=min((r for r in fitting if r["method"] == "dense"), key=rank, default=None),
        smallest=min(records, key=lambda r: r["compressed_mb"]),
        smallest_dense=min(dense, key=lambda r: r["compressed_mb"], default=None),
    )


def config_text(record):
    return f"{record['model']} ({params_text(record['params'])} params) {level_label(record)}"


def score_text(record):
    return f"{record['metric']} {number_text(record['value'])}"


def describe(selection, tests=None):
    """The answer in one line; tests (significance.SignificanceTests of the sweep) add whether the best config's
    lead over the best uncompressed model that fits is significant."""
    budget = f"{number_text(selection.max_mb)} MB"
    if selection.max_ms is not None:
        budget += f" and {number_text(selection.max_ms)} ms"
    best, dense = selection.best, selection.best_dense
    if best is None:
        smallest = selection.smallest
        return (f"under {budget}: nothing fits; the smallest configuration, {config_text(smallest)}, "
                f"needs {number_text(smallest['compressed_mb'])} MB")
    line = f"under {budget}: best is {config_text(best)}, {score_text(best)} at {number_text(best['compressed_mb'])} MB"
    if dense is None:
        line += "; no uncompressed (dense 32-bit) model fits"
        if selection.smallest_dense is not None:
            line += (f" (the smallest, {selection.smallest_dense['model']}, "
                     f"needs {number_text(selection.smallest_dense['compressed_mb'])} MB)")
        return line
    if dense is best:
        return line + "; it is itself the best uncompressed model that fits"
    # best ranks first, so the dense model scores the same or worse.
    gap = "the same" if dense["value"] == best["value"] else f"{number_text(abs(best['value'] - dense['value']))} worse"
    difference = tests.compare(best, dense) if tests else None
    if difference:
        gap += f"; {difference.text()}"
    return (line + f"; the best uncompressed model that fits, {dense['model']} ({params_text(dense['params'])} "
            f"params, {number_text(dense['compressed_mb'])} MB), scores {score_text(dense)} ({gap})")
