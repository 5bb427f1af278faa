"""Unstructured magnitude pruning: which weights are prunable, their masks, and keeping them at zero.

Exactly which entries to prune: the k smallest magnitudes over a list of arrays, ties by position.

Order is (|value|, flat position in the concatenation of the arrays), so the result is unique and a
resumed run or a second pruning pass reproduces it. The k-th smallest magnitude is first bracketed
from a fixed-seed sample (the sample only affects speed, never the result); one chunked pass per
array then writes the keep mask for everything outside the bracket and collects the few entries
inside it, which settle the exact threshold and its ties. Extra memory is the masks plus about 1%
of the entries, instead of a concatenation of every magnitude plus sort buffers. When the bracket
misses or holds too much (heavy ties, e.g. re-pruning a pruned model, whose zeros all tie), an exact
in-place partition of the concatenated magnitudes decides instead.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .spec import SCOPES, choice_problem, fraction_problem, raise_problems
from .tensors import CHUNK, flat_numpy, linear_and_embedding_weights

NOTHING_PRUNABLE = (
    "nothing prunable: prunable tensors are nn.Linear weight matrices, plus nn.Embedding weights "
    "with prune_embeddings=True (never biases or LayerNorm)"
)


def prunable_weights(model: nn.Module, include_embeddings: bool = False) -> dict[str, nn.Parameter]:
    return linear_and_embedding_weights(model, include_embeddings)


def pruned_count(fraction: float, n: int) -> int:
    """How many of n items (weights here, heads and neurons in structured.py) a fraction prunes, the one rounding of
    "a fraction F of n" in this package: the nearest integer, halves rounded down, so that a quarter of two heads
    removes none rather than half of them."""
    return math.ceil(fraction * n - 0.5)


def magnitude_masks(weights: dict[str, torch.Tensor], sparsity: float, scope: str) -> dict[str, torch.Tensor]:
    """Keep masks (True = kept, on each weight's device) that prune exactly pruned_count(sparsity, n)
    of the smallest-magnitude entries: n over all weights together for scope "global", per weight
    for "layer". Ties go by flat position (earlier first), so the masks are reproducible."""
    problems = [fraction_problem("sparsity", sparsity), choice_problem("scope", scope, SCOPES)]
    if not weights:
        problems.append(NOTHING_PRUNABLE)
    raise_problems("pruning", [p for p in problems if p])
    groups = [list(weights)] if scope == "global" else [[name] for name in weights]
    masks = {}
    for names in groups:
        flats = [flat_numpy(weights[name]) for name in names]
        n_prune = pruned_count(sparsity, sum(flat.size for flat in flats))
        for name, keep in zip(names, keep_masks(flats, n_prune)):
            weight = weights[name]
            masks[name] = torch.from_numpy(keep).view(weight.shape).to(weight.device)
    return masks


def apply_masks(weights: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> None:
    """Zero (+0.0) the pruned entries in place; weights without a mask are left alone."""
    problems = [f"mask {name!r} matches no weight" for name in masks if name not in weights]
    problems += [
        f"mask {name!r} has shape {tuple(mask.shape)}, weight has {tuple(weights[name].shape)}"
        for name, mask in masks.items()
        if name in weights and mask.shape != weights[name].shape
    ]
    raise_problems("masks", problems)
    with torch.no_grad():
        for name, mask in masks.items():
            weights[name].masked_fill_(~mask.to(weights[name].device), 0)


# ------------------------------------------------------------------ masks from any score (calibrated methods)
def lowest_pruned_keep(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Keep mask of a flat score vector pruning exactly its ``count`` lowest scores, ties by position (stable)."""
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if count > 0:
        order = torch.sort(scores, stable=True).indices
        keep[order[:count]] = False
    return keep


def n_of_m_keep(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep mask (rows x columns) that prunes the n lowest scores of every m consecutive columns of each row."""
    rows, columns = scores.shape
    if columns % m:
        raise ValueError(f"{n}:{m} pruning needs a width divisible by {m} (got {columns} columns)")
    grouped = scores.reshape(rows, columns // m, m)
    order = torch.sort(grouped, dim=2, stable=True).indices
    keep = torch.ones_like(grouped, dtype=torch.bool)
    keep.scatter_(2, order[:, :, :n], False)
    return keep.reshape(rows, columns)


# ------------------------------------------------------------------ exactly which entries: the k smallest magnitudes
SAMPLE_SIZE = 1 << 20
BRACKET_SIGMAS = 7.0  # a miss only costs time (the exact fallback), never correctness
MIN_BAND_CAPACITY = 1 << 20


def keep_masks(arrays: list[np.ndarray], n_prune: int) -> list[np.ndarray]:
    """Boolean keep masks (True = kept), one per 1-D array, pruning exactly n_prune entries in total."""
    total = sum(a.size for a in arrays)
    if not 0 <= n_prune <= total:
        raise ValueError(f"cannot prune {n_prune} of {total} entries")
    if n_prune == 0:
        return [np.ones(a.size, dtype=bool) for a in arrays]
    if n_prune == total:
        return [np.zeros(a.size, dtype=bool) for a in arrays]
    dtype = np.float64 if any(a.dtype == np.float64 for a in arrays) else np.float32
    masks = _select_in_bracket(arrays, n_prune, _sample_bracket(arrays, n_prune, total, dtype), dtype)
    if masks is None:
        masks = _select_by_partition(arrays, n_prune, dtype)
    return masks


def _magnitude_chunks(a: np.ndarray, dtype):
    """(start, |a[start:start + CHUNK]|) in a reused buffer."""
    buffer = np.empty(min(CHUNK, a.size), dtype=dtype)
    for start in range(0, a.size, CHUNK):
        chunk = a[start : start + CHUNK]
        yield start, np.abs(chunk, out=buffer[: chunk.size])


def _sample_bracket(arrays, n_prune: int, total: int, dtype) -> tuple[float, float]:
    """(lo, hi) that very probably contain the n_prune-th smallest magnitude."""
    if total <= SAMPLE_SIZE:  # the sample is the population: the bracket is the exact value
        exact = np.partition(np.abs(np.concatenate(arrays).astype(dtype)), n_prune - 1)[n_prune - 1]
        return float(exact), float(exact)
    picks = np.sort(np.random.default_rng(0).integers(0, total, SAMPLE_SIZE))
    offsets = np.cumsum([0] + [a.size for a in arrays])
    sample = np.empty(SAMPLE_SIZE, dtype=dtype)
    for i, a in enumerate(arrays):
        start, stop = np.searchsorted(picks, offsets[i : i + 2])
        sample[start:stop] = np.abs(a[picks[start:stop] - offsets[i]])
    sample.sort()
    fraction = n_prune / total
    spread = BRACKET_SIGMAS * np.sqrt(SAMPLE_SIZE * fraction * (1 - fraction)) + 1
    lo_rank = int(np.floor(SAMPLE_SIZE * fraction - spread))
    hi_rank = int(np.ceil(SAMPLE_SIZE * fraction + spread))
    lo = float(sample[lo_rank]) if lo_rank >= 0 else 0.0
    hi = float(sample[hi_rank]) if hi_rank < SAMPLE_SIZE else float("inf")
    return lo, hi


def _select_in_bracket(arrays, n_prune: int, bracket: tuple[float, float], dtype) -> list[np.ndarray] | None:
    lo, hi = bracket
    capacity = max(MIN_BAND_CAPACITY, sum(a.size for a in arrays) // 16)
    masks, band_positions, band_values = [], [], []
    below = band_size = 0
    in_band = np.empty(min(CHUNK, max(a.size for a in arrays)), dtype=bool)
    for a in arrays:
        keep = np.empty(a.size, dtype=bool)
        positions = []
        for start, magnitude in _magnitude_chunks(a, dtype):
            chunk_keep = np.greater(magnitude, hi, out=keep[start : start + magnitude.size])
            chunk_in_band = np.greater_equal(magnitude, lo, out=in_band[: magnitude.size])
            below += magnitude.size - np.count_nonzero(chunk_in_band)
            found = np.flatnonzero(np.logical_xor(chunk_in_band, chunk_keep, out=chunk_in_band))  # keep implies >= lo
            band_size += found.size
            if band_size > capacity or below > n_prune:
                return None
            positions.append(found + start)
            band_values.append(magnitude[found])
        masks.append(keep)
        band_positions.append(np.concatenate(positions) if positions else np.empty(0, dtype=np.int64))
    to_prune = n_prune - below
    if to_prune > band_size:
        return None
    band = np.concatenate(band_values)
    band_keep = np.ones(band.size, dtype=bool)
    if to_prune:
        threshold = np.partition(band, to_prune - 1)[to_prune - 1]
        np.greater(band, threshold, out=band_keep)
        ties = np.flatnonzero(band == threshold)
        ties_to_prune = to_prune - np.count_nonzero(band < threshold)
        band_keep[ties[ties_to_prune:]] = True  # the earliest positions go first
    start = 0
    for mask, positions in zip(masks, band_positions):
        mask[positions[band_keep[start : start + positions.size]]] = True
        start += positions.size
    return masks


def _select_by_partition(arrays, n_prune: int, dtype) -> list[np.ndarray]:
    magnitudes = np.concatenate(arrays).astype(dtype, copy=False)
    np.abs(magnitudes, out=magnitudes)
    magnitudes.partition(n_prune - 1)  # in place: one concatenation is the only extra memory
    threshold = magnitudes[n_prune - 1]
    ties_to_prune = n_prune - np.count_nonzero(magnitudes[:n_prune] < threshold)
    del magnitudes
    masks = []
    for a in arrays:
        keep = np.empty(a.size, dtype=bool)
        for start, magnitude in _magnitude_chunks(a, dtype):
            np.greater(magnitude, threshold, out=keep[start : start + magnitude.size])
            ties = np.flatnonzero(magnitude == threshold)
            keep[start + ties[ties_to_prune:]] = True
            ties_to_prune = max(0, ties_to_prune - ties.size)
        masks.append(keep)
    return masks
