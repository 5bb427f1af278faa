"""The Pareto frontier of quality vs compressed memory: the configs no other config beats on both at once.

The paper's second claim is read off it: at a given memory, is the frontier point a heavily compressed large
model or a lightly compressed small one? And, per compressor family, does the answer change with the compressors?
"""
from .sweep_results import compressor_family


def better_or_equal(a, b, higher_is_better):
    return a >= b if higher_is_better else a <= b


def dominates(a, b):
    """a is at least as small and as good as b, and strictly one of the two."""
    higher = a["higher_is_better"]
    no_worse = a["compressed_mb"] <= b["compressed_mb"] and better_or_equal(a["value"], b["value"], higher)
    strictly = a["compressed_mb"] < b["compressed_mb"] or a["value"] != b["value"]
    return no_worse and strictly


def pareto_frontier(records):
    """The non-dominated records, smallest first (ties in both memory and quality are all kept).

    Quadratic, and written so because it is plainly the definition: sweeps hold hundreds of points, not millions.
    """
    frontier = [r for r in records if not any(dominates(other, r) for other in records)]
    return sorted(frontier, key=lambda r: (r["compressed_mb"], r["model"], r["sparsity"], r["bits"]))


def family_records(records, family):
    """Dense and the configs of one compressor family ("paper" or "calibrated", sweep_results.FAMILIES)."""
    return [r for r in records if r["method"] == "dense" or compressor_family(r) == family]


def pruning_records(records):
    """Dense and pruning-only configs: the frontier pruning alone draws."""
    return [r for r in records if r["method"] in ("dense", "prune")]


def quantization_records(records):
    return [r for r in records if r["method"] in ("dense", "quant")]


def speed_records(records):
    """Dense and the configs made for decoding speed: structured pruning, int8 kernels, both (none if the sweep
    had no such config)."""
    speed = [r for r in records if r["method"] in ("structured", "int8", "structured+int8")]
    return [r for r in records if r["method"] == "dense"] + speed if speed else []
