"""Exactly which entries to prune: the k smallest magnitudes over a list of arrays, ties by position.

Order is (|value|, flat position in the concatenation of the arrays), so the result is unique and a
resumed run or a second pruning pass reproduces it. The k-th smallest magnitude is first bracketed
from a fixed-seed sample; one pass per array then writes the keep mask for everything outside the
bracket and collects the few entries inside it, which settle the exact threshold and its ties.
Memory is the masks plus one array-sized scratch, not a concatenation of every magnitude plus sort
buffers. When the bracket misses or holds too much (heavy ties, e.g. re-pruning an already pruned
model whose zeros all tie), an exact partition of the concatenated magnitudes decides instead.
"""

from __future__ import annotations

import numpy as np

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
    scratch = np.empty(max(a.size for a in arrays), dtype=dtype)
    masks = _select_in_bracket(arrays, n_prune, _sample_bracket(arrays, n_prune, total, dtype), scratch)
    if masks is None:
        masks = _select_by_partition(arrays, n_prune, scratch)
    return masks


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


def _select_in_bracket(arrays, n_prune: int, bracket: tuple[float, float], scratch) -> list[np.ndarray] | None:
    lo, hi = bracket
    capacity = max(MIN_BAND_CAPACITY, sum(a.size for a in arrays) // 16)
    masks, band_positions, band_values = [], [], []
    below = band_size = 0
    for a in arrays:
        magnitude = np.abs(a, out=scratch[: a.size])
        keep = np.greater(magnitude, hi)
        outside = np.less(magnitude, lo)
        below += np.count_nonzero(outside)
        np.logical_or(outside, keep, out=outside)
        positions = np.flatnonzero(np.logical_not(outside, out=outside))
        band_size += positions.size
        if band_size > capacity or below > n_prune:
            return None
        band_positions.append(positions)
        band_values.append(magnitude[positions])
        masks.append(keep)
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


def _select_by_partition(arrays, n_prune: int, scratch) -> list[np.ndarray]:
    magnitudes = np.concatenate(arrays).astype(scratch.dtype, copy=False)
    np.abs(magnitudes, out=magnitudes)
    magnitudes.partition(n_prune - 1)  # in place: one concatenation is the only extra memory
    threshold = magnitudes[n_prune - 1]
    ties_to_prune = n_prune - np.count_nonzero(magnitudes[:n_prune] < threshold)
    del magnitudes
    masks = []
    for a in arrays:
        magnitude = np.abs(a, out=scratch[: a.size])
        keep = np.greater(magnitude, threshold)
        ties = np.flatnonzero(magnitude == threshold)
        keep[ties[ties_to_prune:]] = True
        ties_to_prune = max(0, ties_to_prune - ties.size)
        masks.append(keep)
    return masks
